"""Who may do what: signature rules, embedded principals, the Chef Server backend."""
