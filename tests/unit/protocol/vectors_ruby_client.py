# ruff: noqa: E501  (verbatim wire frames: one line each, as recorded)
"""Known-answer vectors: frames and keys of the Ruby push client 3.0.13 (protocol 2.0).

Every value is copied verbatim from the project's vector file
`docs/spec/vectors/ruby-client-2.0-frames.md` (recorded from the unmodified Chef push-jobs client
3.0.13 with mixlib-authentication 3.0.6; throwaway test keys): §0 keys, §1 config request
(signing protocols 1.0, 1.1, 1.3), §2 server heartbeat, §3 the 27 command-channel frames.
"""

from __future__ import annotations

CLIENT_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwR84N9iPOEFP+OSoAwCY
Ip9DxFNV6LuTdvJVUmjarDw6LufFD2I1hnX0bX0XdtXg++fPFkDpYveRrMWGe1Rw
kPGhcPwIhW2mEyeQr59d5WIxpbZDs1b0o/7BlJzI8nEI9Ikm7XMU1Vwy6erQkL7G
jl5JdL2rroixua+25kpQ6ZR5Ol6Q9b8B8nkHM+fUUZbRt+4TodQYz/CTKUoEzaW9
NNRqiO/02vt49XntlBQ4Fm0iDYbYpnklJjqbjaFm7xcnyB+kSdaXlK6lwJ8DqPZV
QRygYQ66RMEdEkBBkIvwq0TA8GWn77H0dnuYBuoIqLOO/mNzkk6+pGvQgMvZuulO
NQIDAQAB
-----END PUBLIC KEY-----
"""

SERVER_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwkynMcXsoc6hlgBbzvm4
zreOofxGgA1ihKVG5mzPu68QHPh8RaK7D9ppSCNRyFWnMGHi0UNGs9lYxSV8j+MO
RTn4FNXxZRDMMieNXRNETzGOGci6nOitnDu1VFtOUti+5ShhZbt5boykshSdwiEx
kUHxeBKS4NqO2dPKJW9HXVK4HbfmBSIGZvER0rw+nbWPFdcnmQQMmeihy/CgV4PZ
XgU+BH3/wsiJAG7SE7OgbPrS7A/Q4hmCWT/83wokqbVqTOTEyNt7OwrLZNiirikQ
FnDNQKfeVqf4aJGROEHMAX7pFmE6HwgOGbj4D8vpP5O9E0/kGAtivJu3eHmZGcJF
BwIDAQAB
-----END PUBLIC KEY-----
"""

SESSION_KEY_B64 = "3Hzj1o0llMdJT3K28BEZ2JP9D5LIFWLh3rHKYwkqfrY="
SERVER_CURVE_PUBLIC = "zjIPNB<)E:/l5xh^4eo-Uu8rajEB=@wSr>VGMFRY"
CLIENT_CURVE_PUBLIC = "88UPpcf#SZFHVBSne^zXWnt<F^6PvP*^:%5G.Z<y"

# §2: (header, body) of the server heartbeat, signed rsa2048_sha1 with the server key
SERVER_HEARTBEAT = (
    b"Version:2.0;SigningMethod:rsa2048_sha1;Signature:dWz0zwd01QrgPJOCN6XYaTJff75tC1eDry3DHaFAWYPydsRvhXCxF2fJAq00wqhorw42W5M3CQQW77lTzQhoFhqAVYajBosoYkbszVcHWleIhb3laqtuyoZ/kEwPMCUHluah56bq63IqDtuuz/7M7q7Ks/AEZHIqKNFXdq84yyXmWdzuYEKuJHPrv9lAa1oRbf5obXm1h9xTEVMQeV3fCk2h0wKyv433+X3/TsOMo+/8Nj6XjzQSU7Bj27HIJ9lLO3F8stGrOVYdFZnQu/pXS8hMX7vjS4PK0jQL9d/rLzGFg3Zn1pPx2f56tSyF870VLxGPPnPXKbbk3+ARvU6wpA==",
    b'{"sequence":1,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","server":"stubhost","type":"heartbeat","incarnation_id":"91f5cd6f-a681-4ab7-8909-f7c0f6d055ef"}',
)

# §3: (number, direction, header, body); direction 'C' = client → server, 'S' = server → client
FRAMES = [
    (
        1,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:GE+WAYYw7VOZ7+m/adJaZj2J5U8mHygV/m+Dd7nbuCI=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"heartbeat","sequence":1,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_state":"idle","job_id":null}',
    ),
    (
        2,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:FUia4D4kgmqVmyh5llgM3uXQcLbfI7Bcyfu4vA2AJpA=",
        b'{"sequence":1,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","type":"abort"}',
    ),
    (
        3,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:p+NwkFjjNUVdycqVC5Zk7XI/6PdMG8cKYEl5BsVgqho=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"aborted","sequence":2,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":null}',
    ),
    (
        4,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:Mvm7uTqRGRJ9Pa+Quz6ztJqSDmh5zCfam0gt/HI2VXk=",
        b'{"sequence":2,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","type":"commit","job_id":"b6cb8489412648d4a9bd680355578a25","server":"127.0.0.1","command":"hello","dir":"/tmp","env":{"FOO":"bar"},"file":"raw:file-contents\\n","capture":true}',
    ),
    (
        5,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:sAUL+oaVTxbt8fjZ8T6mnGItO94obAM7LzYn2PMzSVc=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_commit","sequence":3,"timestamp":"Fri, 27 Nov 2026 05:56:29 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"b6cb8489412648d4a9bd680355578a25"}',
    ),
    (
        6,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:NFoulj2s201ogSUgXSV4W/tY34x+mQPV9Gx80fEEcqM=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"heartbeat","sequence":4,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_state":"committed","job_id":"b6cb8489412648d4a9bd680355578a25"}',
    ),
    (
        7,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:pul5mK9ZC7TgCClTfKgOxlYq8PMHNnrORYxmBC3apCE=",
        b'{"sequence":3,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"run","job_id":"b6cb8489412648d4a9bd680355578a25"}',
    ),
    (
        8,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:1wfmSQLAzwMbYKXrb2jLe3rLDP6Opb/CSli6kg+CB1A=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_run","sequence":5,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"b6cb8489412648d4a9bd680355578a25"}',
    ),
    (
        9,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:DrD+tWAl5DA8LVmxso260sx/XcBHrwdeBj/DFLHsvks=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"succeeded","sequence":6,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"b6cb8489412648d4a9bd680355578a25","stdout":"hello from node1 FOO=bar\\nfile-contents\\n/tmp\\n","stderr":"to-stderr\\n"}',
    ),
    (
        10,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:EVTFs2ClRhNJV3qk9kgiz/QSzYDSIvpz6IvX22wf8G8=",
        b'{"sequence":4,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"commit","job_id":"5ec813544b2c4e31aad7d176ae974ef7","server":"127.0.0.1","command":"rm -rf /"}',
    ),
    (
        11,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:j0B+4J1tK1oIhJgx5waqeoT9remTqQMDEHQaYY/uvaQ=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"nack_commit","sequence":7,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"5ec813544b2c4e31aad7d176ae974ef7"}',
    ),
    (
        12,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:D8V4Lpaumeg+M9eFBfJWmuwgIFtqrz7HoJpWjJ4fUYs=",
        b'{"sequence":5,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"commit","job_id":"2d45c9d2cf08426a996583dd795330ce","server":"127.0.0.1","command":"fail 7","capture":true}',
    ),
    (
        13,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:9mtoaxFi56zkyr1J43E7HyKz+Ah5FQQW8Emh+lXJ0Po=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_commit","sequence":8,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"2d45c9d2cf08426a996583dd795330ce"}',
    ),
    (
        14,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:FF47cDRF0eqEQ5F5SgQxEdQ2HrMAoUC2BFBCLRn5CPM=",
        b'{"sequence":6,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"run","job_id":"2d45c9d2cf08426a996583dd795330ce"}',
    ),
    (
        15,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:Rk4kqGhtBbkOZdjZucSfTNOCbR6V/90fXKI8piTIc4c=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_run","sequence":9,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"2d45c9d2cf08426a996583dd795330ce"}',
    ),
    (
        16,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:6bznLkHpftqNqjhqSnVxhNA+PqeL/DjRxN0Dxg4X9Kg=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"failed","sequence":10,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"2d45c9d2cf08426a996583dd795330ce","stdout":"failing\\n","stderr":""}',
    ),
    (
        17,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:FDsLZBMwfm6Xy683S26SDukWO+XmUvIe9EuOh1sDn6w=",
        b'{"sequence":7,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"run","job_id":"bde6e246565142138c56ecc817485795"}',
    ),
    (
        18,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:BSh2mgQws6ZfOjO3EaXU3mQPqZ3/WdW99tHq01pq4vs=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"nack_run","sequence":11,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"bde6e246565142138c56ecc817485795"}',
    ),
    (
        19,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:o+TxDtwBWGU9dc9sStwaH3VdJ8LLv34s58msoCD192Y=",
        b'{"sequence":8,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"commit","job_id":"d74355bd5a5e4eb1919480a05f52c9a1","server":"127.0.0.1","command":"sleep"}',
    ),
    (
        20,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:wZCmca+fCCNG5VI3n05X3BurwkE709k4QJcczimNWOE=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_commit","sequence":12,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"d74355bd5a5e4eb1919480a05f52c9a1"}',
    ),
    (
        21,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:ajWbNzZ0UyTHP+Fpre7FHpiD6vhs7lwlQmv2ZCAf2ms=",
        b'{"sequence":9,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","type":"run","job_id":"d74355bd5a5e4eb1919480a05f52c9a1"}',
    ),
    (
        22,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:mGAAkGlJWYXy206DU/vPsxH/VxSt7KNKoYuDRMh9CIQ=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"ack_run","sequence":13,"timestamp":"Fri, 27 Nov 2026 05:56:30 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"d74355bd5a5e4eb1919480a05f52c9a1"}',
    ),
    (
        23,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:ShQICC4khZKM7CzKdGBmB4oqm3aOvGd6K6B5R13LgJU=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"heartbeat","sequence":14,"timestamp":"Fri, 27 Nov 2026 05:56:31 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_state":"running","job_id":"d74355bd5a5e4eb1919480a05f52c9a1"}',
    ),
    (
        24,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:vRC5sjOfDCsba6KC1bh9mqwUJ8xl84d7e+tplS86T/k=",
        b'{"sequence":10,"timestamp":"Fri, 27 Nov 2026 05:56:31 GMT","type":"abort"}',
    ),
    (
        25,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:0yeXDOLMny2rDN4OwwK9l0EuUFqEU16CJGkhfvv2AhQ=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"aborted","sequence":15,"timestamp":"Fri, 27 Nov 2026 05:56:34 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_id":"d74355bd5a5e4eb1919480a05f52c9a1"}',
    ),
    (
        26,
        "S",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:4kovjEy+6HbZVr/eAaVlOfhrlulK8a7nJfXBuL2Il4w=",
        b'{"sequence":11,"timestamp":"Fri, 27 Nov 2026 05:56:34 GMT","type":"ack"}',
    ),
    (
        27,
        "C",
        b"Version:2.0;SigningMethod:hmac_sha256;Signature:L811/8ezMDgPIz27KCVVQX31wNeXtNZnvCuctj4AU74=",
        b'{"node":"node1","client":"node1host","protocol_version":"2.0","org":"testorg","type":"heartbeat","sequence":16,"timestamp":"Fri, 27 Nov 2026 05:56:34 GMT","incarnation_id":"2e76526c-ff32-403c-9469-346ad4b21d98","job_state":"idle","job_id":null}',
    ),
]

# §1: the config request (GET, empty body, user node1)
CONFIG_METHOD = "GET"
CONFIG_PATH = "/organizations/testorg/pushy/config/node1"
CONFIG_QUERY = "ccpk=88UPpcf%23SZFHVBSne%5EzXWnt%3CF%5E6PvP%2A%5E%3A%255G.Z%3Cy&version=2.0"
CONFIG_USER_ID = "node1"

# §1: the signing protocol 1.1 request headers, exactly as received
CONFIG_HEADERS_1_1 = {
    "X-Ops-Server-Api-Version": "2",
    "X-Ops-Sign": "algorithm=sha1;version=1.1;",
    "X-Ops-Userid": "node1",
    "X-Ops-Timestamp": "2026-11-27T05:56:29Z",
    "X-Ops-Content-Hash": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
    "X-Ops-Authorization-1": "V0tB9FXh3DJL/LfWqdb8+OnrQ1cjjaOI+Qt821JmmgjB1nkZfTXrS6+cy46e",
    "X-Ops-Authorization-2": "l1A8QFpVJj7dCV/Jge2a0fbWVR11C+GRBneNZPLAITkWE/W4zSpHO3NEr3/P",
    "X-Ops-Authorization-3": "SmUOuCs+uoxM37xm9n2t0RcBE2AiuAyak6fGm+pDun8ERh6rHf1emkWh53HG",
    "X-Ops-Authorization-4": "ELvmCIfzBO23IOt2Kvu356FFbkm+DK9hPJOxVL08ZmjzD4aKt/Dq3LX6+DSy",
    "X-Ops-Authorization-5": "ff1Is0pAICCNVzt7JD1/fmWgo65e/MWA8tbzIs7XSFufz5kKVZ76zcIc7cYG",
    "X-Ops-Authorization-6": "JqR4gOrgJImq9vD6ocTpt5/5FGff6kuSfNuZGvW9CA==",
}

# §1: canonical request strings: version → (X-Ops-Timestamp, X-Ops-Server-API-Version, text)
CANONICAL = {
    "1.1": (
        "2026-11-27T05:56:29Z",
        None,
        "Method:GET\nHashed Path:20mqKgsACTSO9pD5MrDAMUhXq4I=\nX-Ops-Content-Hash:2jmj7l5rSw0yVb/vlWAYkK/YBwk=\nX-Ops-Timestamp:2026-11-27T05:56:29Z\nX-Ops-UserId:+TfDfpSdnvog0pWK8wkjXHPsA5o=",
    ),
    "1.0": (
        "2026-11-27T05:56:58Z",
        None,
        "Method:GET\nHashed Path:20mqKgsACTSO9pD5MrDAMUhXq4I=\nX-Ops-Content-Hash:2jmj7l5rSw0yVb/vlWAYkK/YBwk=\nX-Ops-Timestamp:2026-11-27T05:56:58Z\nX-Ops-UserId:node1",
    ),
    "1.3": (
        "2026-11-27T05:57:07Z",
        "2",
        "Method:GET\nPath:/organizations/testorg/pushy/config/node1\nX-Ops-Content-Hash:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nX-Ops-Sign:version=1.3\nX-Ops-Timestamp:2026-11-27T05:57:07Z\nX-Ops-UserId:node1\nX-Ops-Server-API-Version:2",
    ),
}
