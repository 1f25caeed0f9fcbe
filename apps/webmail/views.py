"""The webmail's reading side: folders, the message list, reading, actions,
search. Views parse, call the store (through the small modules beside this
one) and render; every id in a URL is looked up inside the signed-in user's
own mailbox, so another mailbox's ids are not found."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from apps.directory.models import Mailbox
from apps.imap.search import search_folder
from apps.store import filed, mime
from apps.store import services as store
from apps.store.models import Flag, Folder, Message, SpecialUse
from apps.web.auth import mailbox_required
from apps.webmail import actions, listing, reading
from apps.webmail.folders import (
    folder_entries,
    folder_of,
    message_of,
    messages_of,
)
from apps.webmail.query import QueryError, parse
from apps.webmail.sanitize import clean_html, frame_policy, has_remote_content, text_to_html
from mailhost.errors import Invalid, MailhostError

UNDO_KEY = "webmail_undo"
SEARCH_LIMIT = 200
# Types a browser shows as an image without running anything (no SVG).
INLINE_IMAGES = {"image/png", "image/gif", "image/jpeg", "image/jpg", "image/webp"}


def _mailbox(request: HttpRequest) -> Mailbox:
    return request.user.mailbox  # type: ignore[union-attr]


def _layout(request: HttpRequest, mailbox: Mailbox, current: Folder | None,
            **context: Any) -> dict[str, Any]:
    entries = folder_entries(mailbox)
    return {
        "folders": entries, "current": current,
        "can_undo": bool(request.session.get(UNDO_KEY)),
        "sorts": {key: label for key, (label, _order) in listing.SORTS.items()},
        **context,
    }


def _kind(folder: Folder) -> str:
    """The special use as a word ("junk", "trash"; "" for none): what the
    folder's toolbar offers depends on it."""
    return folder.special_use.lstrip("\\").lower()


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _folder_page(request: HttpRequest, mailbox: Mailbox, folder: Folder) -> HttpResponse:
    sort = request.GET.get("sort", listing.DEFAULT_SORT)
    if sort not in listing.SORTS:
        sort = listing.DEFAULT_SORT
    try:
        number = int(request.GET.get("page", "1"))
    except ValueError:
        number = 1
    page = listing.page_of(folder, page=number, sort=sort)
    context = {"page": page, "sort": sort, "folder": folder, "kind": _kind(folder),
               "list_url": request.get_full_path()}
    if _is_htmx(request) and request.GET.get("partial") == "list":
        return render(request, "webmail/_list.html", {
            **context, "folders": folder_entries(mailbox), "current": folder})
    return render(request, "webmail/folder.html", _layout(request, mailbox, folder, **context))


@mailbox_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The webmail opens on the Inbox."""
    mailbox = _mailbox(request)
    return _folder_page(request, mailbox, store.get_folder(mailbox, "INBOX"))


@mailbox_required
@require_GET
def folder(request: HttpRequest, folder_id: int) -> HttpResponse:
    mailbox = _mailbox(request)
    return _folder_page(request, mailbox, folder_of(mailbox, folder_id))


@mailbox_required
@require_GET
def sidebar(request: HttpRequest) -> HttpResponse:
    """The folder list alone (refreshed by the live updates)."""
    mailbox = _mailbox(request)
    current = None
    if request.GET.get("current", "").isdigit():
        current = Folder.objects.filter(mailbox=mailbox, pk=request.GET["current"]).first()
    return render(request, "webmail/_sidebar.html", {
        "folders": folder_entries(mailbox), "current": current})


# --- reading ----------------------------------------------------------------------


def _reading_context(request: HttpRequest, mailbox: Mailbox, message: Message,
                     ) -> dict[str, Any]:
    structure = filed.structure_of(message)
    raw = filed.read_message(message)
    body = reading.body_part(structure)
    text_html = None
    is_html = blocked = False
    if body is not None:
        _section, part = body
        text = mime.decode_text(mime.part_bytes(raw, part), part)
        if part["subtype"] == "html":
            is_html = True
            blocked = has_remote_content(text)  # the frame's own request sanitises
        else:
            text_html = text_to_html(text)
    newer, older = listing.neighbours(message)
    fields = reading.header_fields(raw, structure)
    verdict = reading.spam_verdict(fields)
    return {
        "message": message, "blob": message.blob, "is_html": is_html, "text_html": text_html,
        "blocked": blocked, "images": request.GET.get("images") == "1",
        "attachments": reading.attachments(structure),
        "badges": reading.verdict_badges(fields),
        "sender_warnings": reading.sender_warnings(verdict, fields),
        # Why it is in Junk: shown on the Junk folder's messages only.
        "spam_verdict": verdict if message.folder.special_use == SpecialUse.JUNK else None,
        # The thread is looked up across the mailbox: its own request (after the
        # page shows), or inline when asked without JavaScript.
        "conversation": (reading.conversation(mailbox, message)
                         if request.GET.get("conversation") == "1" else None),
        "flagged": bool(message.flags & Flag.FLAGGED),
        "in_trash": message.folder.special_use == SpecialUse.TRASH,
        "in_junk": message.folder.special_use == SpecialUse.JUNK,
        "newer": newer, "older": older,
    }


@mailbox_required
@require_GET
def message(request: HttpRequest, message_id: int) -> HttpResponse:
    """A message in the reading pane, beside the page of the list it is on.
    Opening it marks it \\Seen, as FETCH BODY[] does over IMAP."""
    mailbox = _mailbox(request)
    found = message_of(mailbox, message_id)
    if not found.flags & Flag.SEEN:
        store.set_flags(found.folder, [found.uid], mode="add", flags=Flag.SEEN)
        found.flags |= Flag.SEEN
    context = _reading_context(request, mailbox, found)
    if _is_htmx(request):
        return render(request, "webmail/_reading.html", context)
    page = listing.page_of(found.folder, page=listing.page_number_of(found))
    return render(request, "webmail/message.html", _layout(
        request, mailbox, found.folder, page=page, folder=found.folder,
        kind=_kind(found.folder),
        sort=listing.DEFAULT_SORT, list_url=reverse("webmail:folder", args=[found.folder_id])
        + f"?page={page.number}", **context))


@mailbox_required
@require_GET
def conversation(request: HttpRequest, message_id: int) -> HttpResponse:
    """The thread of a message, for its reading pane."""
    mailbox = _mailbox(request)
    found = message_of(mailbox, message_id)
    return render(request, "webmail/_conversation.html", {
        "message": found, "conversation": reading.conversation(mailbox, found)})


@xframe_options_sameorigin
@mailbox_required
@require_GET
def message_body(request: HttpRequest, message_id: int) -> HttpResponse:
    """The sanitised HTML of a message, for the reading pane's sandboxed frame."""
    mailbox = _mailbox(request)
    found = message_of(mailbox, message_id)
    structure = filed.structure_of(found)
    body = reading.body_part(structure)
    if body is None or body[1]["subtype"] != "html":
        raise Http404
    raw = filed.read_message(found)
    images = request.GET.get("images") == "1"
    cids = reading.content_ids(structure)

    def cid_url(content_id: str) -> str | None:
        section = cids.get(content_id.strip().strip("<>"))
        if section is None:
            return None
        return request.build_absolute_uri(
            reverse("webmail:inline", args=[found.pk, section]))

    text = mime.decode_text(mime.part_bytes(raw, body[1]), body[1])
    cleaned = clean_html(text, cid_url=cid_url, images=images)
    response = render(request, "webmail/body.html", {"html": cleaned.html})
    response["Content-Security-Policy"] = frame_policy(images=images)
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _part(request: HttpRequest, message_id: int, section: str) -> tuple[dict, bytes]:
    found = message_of(_mailbox(request), message_id)
    path = reading.parse_section(section)
    if path is None:
        raise Http404
    part = mime.find_part(filed.structure_of(found), path)
    if part is None or part.get("parts"):
        raise Http404
    raw = filed.read_message(found)
    return part, mime.part_bytes(raw, part)


@mailbox_required
@require_GET
def message_part(request: HttpRequest, message_id: int, section: str) -> HttpResponse:
    """An attachment, byte for byte as the sender attached it, always as a
    download: never shown by the browser in our origin."""
    part, data = _part(request, message_id, section)
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(
        True, reading.filename_of(part, section))
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@xframe_options_sameorigin
@mailbox_required
@require_GET
def message_inline(request: HttpRequest, message_id: int, section: str) -> HttpResponse:
    """An inline image (``cid:``) of a message, for its HTML."""
    part, data = _part(request, message_id, section)
    content_type = f"{part['type']}/{part['subtype']}".lower()
    if content_type not in INLINE_IMAGES:
        raise Http404
    response = HttpResponse(data, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=86400"
    return response


@mailbox_required
@require_GET
def message_source(request: HttpRequest, message_id: int) -> HttpResponse:
    """The raw message as plain text, which the browser shows and never runs."""
    found = message_of(_mailbox(request), message_id)
    data = filed.read_message(found)
    response = HttpResponse(data, content_type="text/plain; charset=utf-8")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    if request.GET.get("download") == "1":
        response["Content-Disposition"] = content_disposition_header(
            True, f"message-{found.pk}.eml")
    return response


# --- acting on mail ---------------------------------------------------------------


def _back(request: HttpRequest, fallback: str) -> HttpResponseRedirect:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(fallback)


@mailbox_required
@require_POST
def act(request: HttpRequest) -> HttpResponse:
    """One action on the selected messages (or the one being read)."""
    mailbox = _mailbox(request)
    action = request.POST.get("action", "")
    ids = [int(value) for value in request.POST.getlist("ids") if value.isdigit()]
    groups = messages_of(mailbox, ids)
    fallback = reverse("webmail:index")
    if groups:
        fallback = reverse("webmail:folder", args=[next(iter(groups)).pk])
    if action not in actions.ACTIONS:
        messages.error(request, "Choose what to do with the messages.")
        return _back(request, fallback)
    if not groups:
        messages.error(request, "Select one or more messages first.")
        return _back(request, fallback)
    target = None
    if action == "move":
        target_id = request.POST.get("target", "")
        if not target_id.isdigit():
            messages.error(request, "Choose a folder to move to.")
            return _back(request, fallback)
        target = folder_of(mailbox, int(target_id))
    try:
        outcome = actions.apply(mailbox, action, groups, target)
    except MailhostError as error:
        messages.error(request, error.message)
        return _back(request, fallback)
    if outcome.undo is not None and outcome.undo.moves:
        request.session[UNDO_KEY] = outcome.undo.to_session()
    messages.success(request, outcome.summary)
    if _is_htmx(request):
        return HttpResponse(status=204)
    return _back(request, fallback)


@mailbox_required
@require_POST
def undo(request: HttpRequest) -> HttpResponse:
    mailbox = _mailbox(request)
    last = actions.Undo.from_session(request.session.pop(UNDO_KEY, None))
    if last is None:
        messages.error(request, "There is nothing to undo.")
        return _back(request, reverse("webmail:index"))
    back = actions.undo(mailbox, last)
    messages.success(request, f"Undone: {back} message{'s' if back != 1 else ''} moved back.")
    return HttpResponseRedirect(reverse("webmail:folder", args=[last.moves[0][0]]))


@mailbox_required
@require_POST
def empty_folder(request: HttpRequest, folder_id: int) -> HttpResponse:
    """Empty Trash (or Junk): deleted for good, no undo."""
    mailbox = _mailbox(request)
    target = folder_of(mailbox, folder_id)
    if target.special_use not in (SpecialUse.TRASH, SpecialUse.JUNK):
        raise Http404
    count = actions.empty_folder(target)
    messages.success(request, f"Deleted {count} message{'s' if count != 1 else ''} for good.")
    return redirect("webmail:folder", target.pk)


# --- folders ----------------------------------------------------------------------


@mailbox_required
def folders(request: HttpRequest) -> HttpResponse:
    """Create, rename and delete folders."""
    mailbox = _mailbox(request)
    error = ""
    if request.method == "POST":
        operation = request.POST.get("operation", "")
        name = request.POST.get("name", "").strip()
        try:
            message_text = _change_folder(mailbox, operation, name, request.POST)
        except (MailhostError, ValueError) as problem:
            error = getattr(problem, "message", "") or str(problem)
        else:
            messages.success(request, message_text)
            return redirect("webmail:folders")
    return render(request, "webmail/folders.html", {
        **_layout(request, mailbox, None), "error": error, "posted": request.POST},
        status=400 if error else 200)


def _change_folder(mailbox: Mailbox, operation: str, name: str, data: Any) -> str:
    """Create, rename or delete a folder; returns what to tell the user."""
    if operation == "create":
        parent = data.get("parent", "")
        full = name
        if parent.isdigit():
            full = f"{folder_of(mailbox, int(parent)).name}{Folder.DELIMITER}{name}"
        store.create_folder(mailbox, full)
        return f"Created the folder {full}."
    folder_id = data.get("folder", "")
    if operation not in ("rename", "delete") or not folder_id.isdigit():
        raise Invalid("Choose a folder and what to do with it.")
    existing = folder_of(mailbox, int(folder_id))
    if existing.name == "INBOX" or existing.special_use:
        raise Invalid("The Inbox and the special folders keep their names and stay.")
    if operation == "rename":
        store.rename_folder(mailbox, existing.name, name)
        return f"Renamed {existing.name} to {name}."
    store.delete_folder(mailbox, existing.name)
    return f"Deleted the folder {existing.name}."


# --- search -----------------------------------------------------------------------


@mailbox_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """Search one folder or all of them, with the same evaluator as IMAP SEARCH."""
    mailbox = _mailbox(request)
    text = request.GET.get("q", "")
    scope = request.GET.get("in", "all")
    current = folder_of(mailbox, int(scope)) if scope.isdigit() else None
    error = None
    results: list[listing.Row] = []
    truncated = False
    try:
        key = parse(text)
    except QueryError as problem:
        key, error = None, str(problem)
    if key is not None:
        targets = [current] if current else list(Folder.objects.filter(mailbox=mailbox))
        # The newest matches of each folder (UIDs ascend with arrival), then
        # newest first across folders in the one query that reads the rows.
        condition = Q(pk__in=[])
        for target in targets:
            uids = search_folder(target.pk, key)
            truncated = truncated or len(uids) > SEARCH_LIMIT
            if uids:
                condition |= Q(folder_id=target.pk, uid__in=uids[-SEARCH_LIMIT:])
        query = Message.objects.filter(condition).order_by("-internal_date", "-pk")
        folders_by_id = {f.pk: f for f in Folder.objects.filter(mailbox=mailbox)}
        results = listing.rows(query[:SEARCH_LIMIT], folders_by_id)
    return render(request, "webmail/search.html", _layout(
        request, mailbox, current, query=text, scope=scope, error=error, results=results,
        truncated=truncated, folder=current), status=400 if error else 200)
