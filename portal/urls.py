from django.urls import path

from portal import views

app_name = "portal"
urlpatterns = [
    path("<str:token>/", views.home, name="home"),
]
