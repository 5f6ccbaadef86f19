"""`ragtune serve`: the HTTP server (serve/app.py), its API keys (serve/auth.py) and the web UI
(serve/ui/). Importing this package is cheap; FastAPI loads with serve.app."""
