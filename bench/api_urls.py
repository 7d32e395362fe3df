"""The product's URLs plus the benchmark's ceiling: a bare DRF endpoint that returns a constant
(no authentication, no database), behind the same middleware. Benchmark only."""

from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import urlpatterns as product_urlpatterns
from django.urls import path


class Ceiling(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def get(self, request):
        return Response({"type": "ceiling", "ok": True})


urlpatterns = [path("bench/ceiling", Ceiling.as_view()), *product_urlpatterns]
