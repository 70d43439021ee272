"""The app's own URLs beside the admin: include them at the site's root for `/metrics`."""

from django.urls import path

from embeddings.metrics import metrics_view

urlpatterns = [path("metrics", metrics_view, name="embeddings-metrics")]
