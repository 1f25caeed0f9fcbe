from django.urls import path

from apps.webmail import views, views_compose, views_settings

app_name = "webmail"

urlpatterns = [
    path("", views.index, name="index"),
    # --- writing side: compose, drafts, send, settings (views_compose, views_settings) ---
    path("compose/", views_compose.compose, name="compose"),
    path("compose/autosave/", views_compose.autosave, name="compose_autosave"),
    path("compose/addresses/", views_compose.address_suggestions, name="address_suggestions"),
    path("settings/", views_settings.settings_page, name="settings"),
    # --- end writing side ---
]
