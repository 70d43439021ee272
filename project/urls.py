"""URL configuration: the admin, and the app's `/metrics` for Prometheus."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("embeddings.urls")),
]
