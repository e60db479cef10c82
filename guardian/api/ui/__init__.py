"""The operator's web UI, served by `guardian serve` at /ui: server-rendered pages (Jinja2, autoescaped), a small
script per page that polls the UI's JSON (/ui/data/...) every two seconds and fills the page with text only, and
uPlot (vendored from npm with its licence, static/vendor/uplot) for the plots. No CDN, no build step.

Reading needs a session (a login with a viewer or an operator token); acting needs an operator's session and the
page's CSRF token; every action goes through `Guard.override` and is logged with the operator's name.
Pages: /ui (rollouts and watches, filterable by service and phase), /ui/rollouts/{id}, /ui/alerts, /ui/login."""
from guardian.api.ui.pages import router

__all__ = ["router"]
