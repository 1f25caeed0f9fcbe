from django.contrib import admin
from django.urls import include, path

from apps.web.metrics import metrics_view

urlpatterns = [
    path("", include("apps.web.urls")),
    path("manage/", include("apps.webadmin.urls")),
    path("mail/", include("apps.webmail.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("apps.api.urls")),
    path("metrics", metrics_view, name="metrics"),
]
