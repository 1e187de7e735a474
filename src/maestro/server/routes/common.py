"""What the route modules share: reading a page request, the writer of a change, and the answers
that are not a plain entity (a page with its next cursor, an appended entry)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from ... import jsonio
from ...errors import validation
from ...paging import CREATION, encode_cursor, page_request
from ..router import ApiRequest, Reply

CLAIM_TOKEN_HEADER = b"x-maestro-claim-token"


def wants_minimal(r: ApiRequest) -> bool:
    """`Prefer: return=minimal` (RFC 7240): the client does not want the whole entity back."""
    prefer = r.header(b"prefer")
    if not prefer:
        return False
    for token in prefer.lower().replace(b";", b",").split(b","):
        if token.strip().replace(b'"', b"") == b"return=minimal":
            return True
    return False


def appended(r: ApiRequest, entity: dict, key: str, render: Callable[[dict], bytes]):
    """The answer to an append to `entity[key]`: the whole entity rendered, or with `Prefer:
    return=minimal` only the entry that was appended (with its id and timestamp), whatever the
    size of the entity it went to."""
    if wants_minimal(r):
        return Reply(jsonio.dumps(entity[key][-1]), 200,
                     [(b"preference-applied", b"return=minimal")])
    return render(entity)


def paged(r: ApiRequest, body: bytes, next_key: tuple | None, order: str) -> Reply:
    """A page of a list: the body stays a plain array; when more may follow, the next cursor
    goes in `X-Next-Cursor` and in a `Link: <...>; rel="next"` header."""
    if next_key is None:
        return Reply(body)
    cursor = encode_cursor(order, next_key)
    query = [(k, v) for k, v in parse_qsl(r.scope.get("query_string", b"").decode("latin-1"))
             if k != "cursor"]
    query.append(("cursor", cursor))
    path = r.scope.get("raw_path") or r.path.encode("utf-8")
    link = b"<" + path + b"?" + urlencode(query).encode("ascii") + b'>; rel="next"'
    return Reply(body, 200, [(b"x-next-cursor", cursor.encode("ascii")), (b"link", link)])


def page_of(r: ApiRequest, order: str = CREATION):
    """The page asked for by `limit` and `cursor` (None: the whole list, unpaged)."""
    return page_request(r.query("limit"), r.query("cursor"), order)


def writer(r: ApiRequest) -> dict:
    """Who writes (the agent's session, None for the user) and the claim token presented in
    `X-Maestro-Claim-Token` (fencing, SPEC §15.3)."""
    raw = r.header(CLAIM_TOKEN_HEADER)
    token = None
    if raw is not None:
        try:
            token = int(raw.decode("latin-1").strip())
        except ValueError:
            raise validation("X-Maestro-Claim-Token must be an integer") from None
    return {"actor": r.identity.session_id if r.identity is not None else None,
            "claim_token": token}
