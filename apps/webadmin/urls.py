from django.urls import path

from apps.webadmin import views, views_trace

app_name = "webadmin"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    # --- operations: dashboard, outbound queue, message trace ---
    path("trace/", views_trace.message_trace, name="trace"),
    # --- end operations ---
]
