from django.urls import path

from apps.webadmin import views

app_name = "webadmin"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
