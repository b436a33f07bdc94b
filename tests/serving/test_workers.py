"""`serving.workers`: when a buffered request is complete (the rest runs under a real gunicorn
in tests/serving/test_hostile.py)."""

import doctest

import pytest

from serving import workers

HEAD = b"POST /v1/score HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    "data,complete",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x", False),  # head not finished
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (HEAD + b"Content-Length: 4\r\n\r\n{}", False),
        (HEAD + b'content-length:4\r\n\r\n{""}', True),
        (HEAD + b"Content-Length: 99999999\r\n\r\n{", True),  # over the limit: the app says 413
        (HEAD + b"Content-Length: nope\r\n\r\n", True),  # gunicorn's parser refuses it
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", False),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", True),
        (b"x" * (workers.HEAD_LIMIT + 1), True),  # an endless head goes to the parser
    ],
)
def test_request_complete(data, complete):
    assert workers.request_complete(bytearray(data), limit=1 << 20) is complete


def test_expect_continue_is_answered_once():
    data = HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    assert workers.expects_continue(data)
    assert not workers.expects_continue(data.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert b"Expect" not in workers.without_expect(data + b"{}")


def test_the_installed_gunicorn_is_supported_and_the_doctests_pass():
    assert workers.supported()
    assert workers.BufferingThreadWorker.__name__ == "BufferingThreadWorker"
    assert doctest.testmod(workers).failed == 0
