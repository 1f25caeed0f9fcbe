from django.urls import path

from apps.webmail import views

app_name = "webmail"

urlpatterns = [
    path("", views.index, name="index"),
]
