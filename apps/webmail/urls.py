from django.urls import path

from apps.webmail import live, views, views_compose, views_security, views_settings

app_name = "webmail"

urlpatterns = [
    path("", views.index, name="index"),
    # Reading side: folders, list, reading, actions, search, live updates.
    path("folder/<int:folder_id>/", views.folder, name="folder"),
    path("folder/<int:folder_id>/empty/", views.empty_folder, name="empty_folder"),
    path("folders/", views.folders, name="folders"),
    path("sidebar/", views.sidebar, name="sidebar"),
    path("message/<int:message_id>/", views.message, name="message"),
    path("message/<int:message_id>/body/", views.message_body, name="body"),
    path("message/<int:message_id>/part/<str:section>/", views.message_part, name="part"),
    path("message/<int:message_id>/inline/<str:section>/", views.message_inline,
         name="inline"),
    path("message/<int:message_id>/source/", views.message_source, name="source"),
    path("message/<int:message_id>/conversation/", views.conversation, name="conversation"),
    path("act/", views.act, name="act"),
    path("undo/", views.undo, name="undo"),
    path("search/", views.search, name="search"),
    path("events/", live.stream, name="events"),
    # --- writing side: compose, drafts, send, settings (views_compose, views_settings) ---
    path("compose/", views_compose.compose, name="compose"),
    path("compose/autosave/", views_compose.autosave, name="compose_autosave"),
    path("compose/addresses/", views_compose.address_suggestions, name="address_suggestions"),
    path("settings/", views_settings.settings_page, name="settings"),
    path("settings/mobileconfig/", views_settings.mobileconfig, name="mobileconfig"),
    path("settings/app-passwords/", views_security.app_passwords_page,
         name="app_passwords"),
    path("settings/two-step/", views_security.two_step, name="two_step"),
    # --- end writing side ---
]
