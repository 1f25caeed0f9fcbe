from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web side's shared shell: one sign-in for every person, the landing
    page by role, the base layout and the security headers of every page."""

    name = "apps.web"
    label = "web"
    verbose_name = "Web sign-in"
