"""A server that fails: the client CLI exits 1 with one line naming the cause, and writes no PNG
(neither a partial one nor an old one replaced)."""

import http.server
import threading
from concurrent import futures

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import client


class _FailingRestHandler(http.server.BaseHTTPRequestHandler):

  def do_POST(self):  # noqa: N802  (BaseHTTPRequestHandler's naming)
    self.rfile.read(int(self.headers["Content-Length"]))
    status, body = self.server.reply
    data = body.encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture
def rest_server():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingRestHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()
  thread.join()


class _FailingPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def Predict(self, request, context):  # noqa: N802  (the gRPC method's name)
    context.abort(grpc.StatusCode.UNAVAILABLE, "model mnist_diffusion is loading")


@pytest.fixture
def grpc_port():
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      _FailingPredictionService(), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  yield port
  server.stop(grace=None)


def _cli(argv, out, capsys):
  code = client.main(["--host", "127.0.0.1", "--digits", "12", "--steps", "2", "--out", str(out),
                      "--timeout", "10"] + argv)
  return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("status, body, expected", [
    (500, "<html>Internal Server Error</html>", "HTTP 500"),
    (404, '{"error": "Servable not found for request: Latest(mnist_diffusion)"}',
     "Servable not found"),
    (200, '{"outputs": {"images": [[[', "Bad response"),
    (200, '{"outputs": {"images": [1, 2, 3]}}', "expected images [N, 28, 28, 1]"),
])
def test_a_rest_server_error_exits_1_and_writes_no_png(rest_server, status, body, expected,
                                                        tmp_path, capsys):
  rest_server.reply = (status, body)
  out = tmp_path / "grid.png"
  code, err = _cli(["--protocol", "rest", "--rest-port", str(rest_server.server_port)], out, capsys)
  assert code == 1
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
  assert list(tmp_path.iterdir()) == []


def test_a_grpc_server_error_exits_1_and_leaves_an_earlier_png_alone(grpc_port, tmp_path, capsys):
  out = tmp_path / "grid.png"
  out.write_bytes(b"an earlier grid")
  code, err = _cli(["--protocol", "grpc", "--grpc-port", str(grpc_port)], out, capsys)
  assert code == 1
  assert err == ["error: TF Serving gRPC error from 127.0.0.1:%d: UNAVAILABLE: model "
                 "mnist_diffusion is loading" % grpc_port]
  assert out.read_bytes() == b"an earlier grid"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]
