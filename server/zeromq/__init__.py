"""The ZeroMQ side: broker shell, ZAP, trio socket adapter, heartbeat publisher."""
