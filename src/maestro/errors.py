"""Errors a client can cause, mapped to the error body of SPEC §6."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered with `{error: true, code, message, details?}`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict:
        out: dict[str, Any] = {"error": True, "code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


def validation(message: str, details: Any = None) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, details)


def not_found(code: str, message: str, details: Any = None) -> ApiError:
    return ApiError(404, code, message, details)


def project_not_found(project_id: str) -> ApiError:
    return not_found("PROJECT_NOT_FOUND", "Project not found", {"projectId": project_id})


def task_not_found(task_id: str, message: str = "Task not found") -> ApiError:
    return not_found("TASK_NOT_FOUND", message, {"taskId": task_id})


def session_not_found(session_id: str) -> ApiError:
    return not_found("SESSION_NOT_FOUND", "Session not found", {"sessionId": session_id})


class StorageError(Exception):
    """The store could not make a change durable; the change was rolled back."""


def conflict(code: str, message: str, details: Any = None) -> ApiError:
    """409: the request is valid but the state of a claim does not allow it (SPEC §15.3)."""
    return ApiError(409, code, message, details)
