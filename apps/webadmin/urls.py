from django.urls import path, re_path

from apps.webadmin import views_dashboard, views_queue, views_trace

app_name = "webadmin"

urlpatterns = [
    # --- operations: dashboard, outbound queue, message trace ---
    path("", views_dashboard.dashboard, name="dashboard"),
    path("queue/", views_queue.queue_list, name="queue"),
    path("queue/<str:queue_id>/", views_queue.queue_message, name="queue_message"),
    re_path(r"^queue/(?P<queue_id>[^/]+)/(?P<action>retry|bounce|delete)/$",
            views_queue.queue_action, name="queue_action"),
    path("trace/", views_trace.message_trace, name="trace"),
    # --- end operations ---
]
