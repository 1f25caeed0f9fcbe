from django.urls import path

from apps.web import views

app_name = "web"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("signin/", views.sign_in, name="sign_in"),
    path("signin/code/", views.sign_in_code, name="sign_in_code"),
    path("signout/", views.sign_out, name="sign_out"),
]
