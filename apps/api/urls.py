from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from apps.api import views
from apps.api.docs import ApiDocsView

router = DefaultRouter()
router.register("domains", views.DomainViewSet, basename="domain")
router.register("mailboxes", views.MailboxViewSet, basename="mailbox")
router.register("aliases", views.AliasViewSet, basename="alias")
router.register("app-passwords", views.AppPasswordViewSet, basename="apppassword")
router.register("tokens", views.ApiTokenViewSet, basename="apitoken")
router.register("admins", views.AdministratorViewSet, basename="administrator")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("v1/me/", views.MeView.as_view(), name="me"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", ApiDocsView.as_view(url_name="schema"), name="api-docs"),
]
