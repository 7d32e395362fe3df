from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound
from core.pagination import page_response


class DeploymentListCreateView(APIView):
    def get(self, request):
        return Response(page_response([], None))


class DeploymentDetailView(APIView):
    def get(self, request, deployment_id):
        raise NotFound(f"deployment {deployment_id} not found")


def _post(self, request):
    from core.errors import InvalidRequest

    request.data  # parse the body so parse errors surface
    raise InvalidRequest("name: this field is required")


DeploymentListCreateView.post = _post
