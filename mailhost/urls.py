from django.contrib import admin
from django.urls import include, path, re_path

from apps.web import views_autoconfig

urlpatterns = [
    # Autoconfiguration and MTA-STS (apps/web/views_autoconfig.py): fixed paths
    # that mail programs and servers ask for, before mail/ (the webmail) claims them.
    path(".well-known/autoconfig/mail/config-v1.1.xml", views_autoconfig.thunderbird),
    path("mail/config-v1.1.xml", views_autoconfig.thunderbird),
    # Outlook asks for /autodiscover/… or /Autodiscover/… (no inline (?i): Django reverses).
    re_path(r"^[aA]utodiscover/[aA]utodiscover\.xml$", views_autoconfig.autodiscover_xml),
    re_path(r"^[aA]utodiscover/[aA]utodiscover\.json$", views_autoconfig.autodiscover_json),
    re_path(r"^[aA]utodiscover/[aA]utodiscover\.json/v1\.0/(?P<address>[^/]+)$",
            views_autoconfig.autodiscover_json),
    path(".well-known/mta-sts.txt", views_autoconfig.mta_sts),
    path("", include("apps.web.urls")),
    path("manage/", include("apps.webadmin.urls")),
    path("mail/", include("apps.webmail.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("apps.api.urls")),
]
