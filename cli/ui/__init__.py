"""`pushjobs ui`: a local web dashboard; its API calls are signed with the operator's key."""
