"""Jobs: the pure state machine, its manager, events, validation and output records."""
