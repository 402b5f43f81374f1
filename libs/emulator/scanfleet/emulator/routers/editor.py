"""What a scan is set up from: the editor's scan templates and uploaded files (key files, policies)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scanfleet.emulator.state import TEMPLATES
from scanfleet.emulator.web import ApiError, Guards, json_response


def editor_router(guards: Guards) -> APIRouter:
    router = APIRouter()

    @router.get("/editor/scan/templates", dependencies=guards.api)
    async def templates() -> Response:
        return json_response(
            {
                "templates": [
                    {
                        "uuid": uuid_,
                        "name": name,
                        "title": title,
                        "desc": desc,
                        "cloud_only": False,
                        "subscription_only": False,
                        "is_agent": False,
                        "more_info": None,
                        "manager_only": False,
                        "unsupported": False,
                    }
                    for uuid_, name, title, desc in TEMPLATES
                ]
            }
        )

    @router.post("/file/upload", dependencies=guards.api)
    async def upload(request: Request) -> Response:
        form = await request.form()
        filename = getattr(form.get("Filedata"), "filename", None)
        if not filename:
            raise ApiError(400, "No file was uploaded")
        return json_response({"fileuploaded": filename})

    return router
