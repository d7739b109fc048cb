"""S3: the Currents files Braze writes (the `CurrentsFiles` port), decoded with fastavro.

Braze does not document the Avro codec of its files; the container header names it. fastavro reads `null`,
`deflate` and `bzip2` itself and `snappy` with cramjam (both in functions/requirements.txt).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import fastavro
from botocore.exceptions import BotoCoreError, ClientError

from ..domain.errors import FileUnavailable, UnreadableFile

# A file that is gone will not come back; anything else (throttling, an outage, a permission being fixed) may.
_GONE = ("NoSuchKey", "NoSuchBucket")


class S3CurrentsFiles:
    def __init__(self, client):
        self._s3 = client

    def records(self, bucket: str, key: str) -> Iterator[dict]:
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in _GONE:
                raise UnreadableFile(f"the file is gone ({code}): it was deleted before it could be read") from None
            raise FileUnavailable(f"cannot read the file from S3 ({code})") from None
        except BotoCoreError as exc:
            raise FileUnavailable(f"cannot read the file from S3 ({type(exc).__name__})") from None
        return decode_avro(body)


def decode_avro(stream: IO[bytes]) -> Iterator[dict]:
    """The records of an Avro object container file. Raises UnreadableFile when it is not one (or its codec is
    unknown), FileUnavailable when the stream breaks off while being read."""
    try:
        reader = fastavro.reader(stream)
        yield from reader
    except (BotoCoreError, ConnectionError, TimeoutError) as exc:
        raise FileUnavailable(f"the file could not be read to its end ({type(exc).__name__})") from None
    except Exception as exc:  # fastavro raises ValueError, EOFError, SchemaResolutionError...: the content is bad
        raise UnreadableFile(f"not an Avro file this connector can read ({type(exc).__name__}: {str(exc)[:200]})") from None
