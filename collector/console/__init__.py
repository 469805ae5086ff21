"""The web console and JSON API (`serve --http`): Starlette pages rendered on the server, served by
uvicorn in its own thread; every page and /api/* route needs a login session or a bearer key.

Modules: credentials (password KDF, keys, stdlib only), auth (who is asking, CSRF, login limits),
api (the JSON routes), pages (the HTML pages), charts (SVG made on the server), app (routes and
middleware put together), server (uvicorn in a thread, HTTPS beyond loopback).
"""
