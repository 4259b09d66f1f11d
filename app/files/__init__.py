"""Files in and out of chats (SPEC §23): uploads, query references, published artifacts.

| module | concept |
|---|---|
| ``store`` | ``FileStore``: the gateway's immutable copy of each file under ``data/.agw/files/<chatId>/`` (ids ``r01``…, ``a01``…), ``Incoming`` (a file being received: hashed, size-limited, never left behind), download links |
| ``names`` | ``safe_name``: a client's file name as one safe path part |
| ``kinds`` | ``classify``: MIME type and ``file``/``image`` from the bytes; ``agent.upload.allowed-types`` |
| ``workspace`` | reading and writing in a chat's sandbox workspace without following planted links |
| ``multipart`` | the streamed ``multipart/form-data`` of ``POST /api/ap/upload`` |
| ``uploads`` | ``Uploads``: an upload into a chat (new chat when none is given), its memory line |
| ``references`` | query ``references`` resolved, listed for the model, images for ``isVision`` models |
| ``artifacts`` | ``publish``: a workspace file as an artifact (``_artifact_publish_``) |
"""

from app.files.artifacts import publish
from app.files.references import Attachments, ReferenceImages, attach_references
from app.files.store import FileStore, Incoming, StoredFile
from app.files.uploads import Uploads, check_chat_owner

__all__ = [
    "Attachments",
    "FileStore",
    "Incoming",
    "ReferenceImages",
    "StoredFile",
    "Uploads",
    "attach_references",
    "check_chat_owner",
    "publish",
]
