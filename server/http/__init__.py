"""The HTTP API: app, request pipeline, routes, handlers and SSE feeds."""
