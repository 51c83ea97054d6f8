"""The S3 operation label of each request the SDK sends: a fixed set of names, whatever the bucket and key."""

from __future__ import annotations

import pytest

from services.common.object_store import s3_operation

CASES = [
    ("GET", "http://s3:8333/bucket/models/a/model.xml", None, "GetObject"),
    ("GET", "http://s3:8333/bucket?list-type=2&prefix=models%2F", None, "ListObjectsV2"),
    ("GET", "http://s3:8333/bucket?location=", None, "GetBucketLocation"),
    ("GET", "http://s3:8333/bucket/big.bin?uploadId=u1", None, "ListParts"),
    ("HEAD", "http://s3:8333/bucket/models/a/model.xml", None, "HeadObject"),
    ("HEAD", "http://s3:8333/bucket", None, "HeadBucket"),
    ("PUT", "http://s3:8333/bucket/models/a/model.xml", {"Content-Length": "3"}, "PutObject"),
    ("PUT", "http://s3:8333/bucket/models/a/model.xml", {"x-amz-copy-source": "/bucket/_tmp/x"}, "CopyObject"),
    ("PUT", "http://s3:8333/bucket/big.bin?partNumber=2&uploadId=u1", None, "UploadPart"),
    ("PUT", "http://s3:8333/bucket", None, "CreateBucket"),
    ("POST", "http://s3:8333/bucket/big.bin?uploads=", None, "CreateMultipartUpload"),
    ("POST", "http://s3:8333/bucket/big.bin?uploadId=u1", None, "CompleteMultipartUpload"),
    ("POST", "http://s3:8333/bucket?delete=", None, "DeleteObjects"),
    ("DELETE", "http://s3:8333/bucket/big.bin?uploadId=u1", None, "AbortMultipartUpload"),
    ("DELETE", "http://s3:8333/bucket/models/a/model.xml", None, "DeleteObject"),
    ("DELETE", "http://s3:8333/bucket", None, "DeleteBucket"),
]


@pytest.mark.parametrize(("method", "url", "headers", "operation"), CASES, ids=[c[3] for c in CASES])
def test_each_request_is_named_by_its_s3_operation(method, url, headers, operation):
    assert s3_operation(method, url, headers) == operation
