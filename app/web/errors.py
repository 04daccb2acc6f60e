"""Error pages and the security headers every response carries."""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from flask import render_template
from flask import request
from werkzeug.exceptions import HTTPException

# Named as in every log line (logger=app.errors), whatever the module's place in the package.
logger = logging.getLogger("app.errors")

# No inline script anywhere, images only from ourselves and Last.fm's hosts;
# the page's script may ask only its own site (connect-src).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' https://lastfm.freetls.fastly.net https://lastfm-img2.akamaized.net https://*.last.fm https://*.lastfm.com https://*.lst.fm; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def handle_http_error(error: HTTPException) -> tuple[Response | str, int]:
    if _wants_json():
        return jsonify(error=error.name, status=error.code), error.code
    return render_template("error.html", code=error.code, name=error.name), error.code


def handle_unexpected(error: Exception) -> tuple[Response | str, int]:
    logger.exception("unhandled error serving %s", request.path)
    if _wants_json():
        return jsonify(error="Internal Server Error", status=500), 500
    return render_template("error.html", code=500, name="Internal Server Error"), 500


def add_security_headers(response: Response) -> Response:
    # Memoised page and API responses carry them already (app.views.Rendered):
    # one lookup instead of four on the hot path.
    if "Content-Security-Policy" not in response.headers:
        response.headers.extend(SECURITY_HEADERS.items())
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
    app.after_request(add_security_headers)
