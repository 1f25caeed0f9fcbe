import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhost.settings")
application = get_wsgi_application()

from mailhost import metrics  # noqa: E402  (after Django's set-up: it reads settings)

metrics.use_directory("web")
