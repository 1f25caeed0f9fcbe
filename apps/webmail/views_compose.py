"""Compose, reply, forward, drafts and send (issue 11 item 5). The views parse
the form and call apps/webmail/writing.py, which sends through the one
submission service."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.delivery.submission import Origin
from apps.directory.models import Mailbox
from apps.store.models import Message, SpecialUse
from apps.web.auth import mailbox_required
from apps.webmail import writing
from apps.webmail.forms_compose import ComposeForm
from mailhost.errors import MailhostError, NotFound

SUGGESTIONS = 10
# How many of the newest sent messages the address suggestions read.
SENT_SCANNED = 300


def _owned(mailbox: Mailbox, pk: Any) -> Message | None:
    """The user's message ``pk`` (None when not given); another's is a 404."""
    if pk in (None, ""):
        return None
    try:
        return writing.owned_message(mailbox, pk)
    except NotFound:
        raise Http404 from None


def _still_there(mailbox: Mailbox, pk: int | None) -> Message | None:
    """The message being answered, if it is still the user's (it may have
    been moved or deleted meanwhile; the letter goes all the same)."""
    if pk is None:
        return None
    return Message.objects.select_related("folder").filter(
        pk=pk, folder__mailbox=mailbox).first()


def _form(request: HttpRequest, mailbox: Mailbox, *, files: bool = True) -> ComposeForm:
    source = _owned(mailbox, request.POST.get("attachments_from"))
    kept = writing.attachments_of(writing.parse_stored(source)) if source else []
    return ComposeForm(request.POST, request.FILES if files else None,
                       identities=writing.identities(mailbox), kept=kept)


def _letter(form: ComposeForm) -> writing.Letter:
    data = form.cleaned_data
    uploads = [writing.Attachment(f.name, f.content_type or "application/octet-stream",
                                  f.read()) for f in data.get("attachments") or []]
    return writing.Letter(
        from_address=data["from_address"], from_name=form.identities[data["from_address"]],
        to=data["to"], cc=data["cc"], bcc=data["bcc"], subject=data["subject"],
        text=data["body"], html=data["html_body"], in_reply_to=data["in_reply_to"],
        references=data["references"].split(),
        attachments=[form.kept[i] for i in data["keep"]] + uploads)


def _render(request: HttpRequest, form: ComposeForm, *, status: int = 200) -> HttpResponse:
    return render(request, "webmail/compose.html", {"form": form}, status=status)


@mailbox_required
def compose(request: HttpRequest) -> HttpResponse:
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    if request.method == "POST":
        return _compose_post(request, mailbox)
    return _compose_get(request, mailbox)


def _compose_post(request: HttpRequest, mailbox: Mailbox) -> HttpResponse:
    form = _form(request, mailbox)
    if not form.is_valid():
        return _render(request, form, status=400)
    letter = _letter(form)
    replacing = _owned(mailbox, form.cleaned_data["draft"])
    if request.POST.get("action") == "send":
        if not letter.recipients:
            form.add_error("to", "Write at least one recipient.")
            return _render(request, form, status=400)
        try:
            writing.send(
                mailbox, letter, replacing=replacing, origin=Origin(
                    listener="webmail", peer_ip=request.META.get("REMOTE_ADDR", ""),
                    tls=request.is_secure()),
                replied=_still_there(mailbox, form.cleaned_data["replied"]),
                forwarded=_still_there(mailbox, form.cleaned_data["forwarded"]))
        except MailhostError as error:
            draft = writing.save_draft(mailbox, letter, replacing=replacing)
            messages.error(request, f"Not sent: {error.message}. Your draft is saved.")
            return redirect(f"{reverse('webmail:compose')}?draft={draft.pk}")
        messages.success(request, "Message sent.")
        return redirect("webmail:index")
    draft = writing.save_draft(mailbox, letter, replacing=replacing)
    messages.success(request, "Draft saved.")
    return redirect(f"{reverse('webmail:compose')}?draft={draft.pk}")


def _compose_get(request: HttpRequest, mailbox: Mailbox) -> HttpResponse:
    letter = writing.Letter(from_address=mailbox.address)
    source: Message | None = None
    draft: Message | None = None
    start = writing.Start(letter)
    for mode in ("reply", "reply_all", "forward"):
        if mode in request.GET:
            start = writing.start_from(mailbox, _owned(mailbox, request.GET[mode]), mode)
            letter, source = start.letter, start.attachments_from
            break
    else:
        if "draft" in request.GET:
            draft = _owned(mailbox, request.GET["draft"])
            if draft.folder.special_use != SpecialUse.DRAFTS:
                raise Http404
            letter, source = writing.letter_from_draft(writing.parse_stored(draft)), draft
    if draft is None:
        signature = writing.settings_of(mailbox).signature.strip()
        signed = f"-- \n{signature}\n" if signature else ""
        letter.text = "\n\n" + signed + (f"\n{letter.text}" if letter.text else "")
    kept = writing.attachments_of(writing.parse_stored(source)) if source else []
    identities = writing.identities(mailbox)
    if letter.from_address not in dict(identities):
        letter.from_address = identities[0][0]
    form = ComposeForm(initial={
        "from_address": letter.from_address, "to": ", ".join(letter.to),
        "cc": ", ".join(letter.cc), "bcc": ", ".join(letter.bcc), "subject": letter.subject,
        "body": letter.text, "html_body": letter.html, "in_reply_to": letter.in_reply_to,
        "references": " ".join(letter.references), "keep": list(range(len(kept))),
        "draft": draft.pk if draft else None, "attachments_from": source.pk if source else None,
        "replied": start.replied.pk if start.replied else None,
        "forwarded": start.forwarded.pk if start.forwarded else None,
    }, identities=identities, kept=kept)
    return _render(request, form)


@require_POST
@mailbox_required
def autosave(request: HttpRequest) -> JsonResponse:
    """Save the draft as it is now (compose.js calls this a moment after each
    change). Files chosen but not yet uploaded stay in the form; what was
    kept is carried into the new draft, in order."""
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    form = _form(request, mailbox, files=False)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    draft = writing.save_draft(mailbox, _letter(form),
                               replacing=_owned(mailbox, form.cleaned_data["draft"]))
    return JsonResponse({"draft": draft.pk})


@require_GET
@mailbox_required
def address_suggestions(request: HttpRequest) -> JsonResponse:
    """Addresses for the To/Cc/Bcc fields: people the user has written to
    (newest first) and the mailboxes of the user's domain."""
    mailbox: Mailbox = request.user.mailbox  # type: ignore[union-attr]
    query = request.GET.get("q", "").strip().lower()
    if len(query) < 2:
        return JsonResponse({"addresses": []})
    sent = writing.special_folder(mailbox, SpecialUse.SENT, "Sent")
    written = Message.objects.filter(folder=sent).order_by("-uid").values_list(
        "blob__to_text", "blob__cc_text")[:SENT_SCANNED]
    found: dict[str, str] = {}
    for to_text, cc_text in written:
        for name, address in getaddresses([to_text, cc_text]):
            if query in name.lower() or query in address.lower():
                found.setdefault(address.lower(), writing.format_address(name, address))
    colleagues = Mailbox.objects.filter(domain=mailbox.domain, active=True).filter(
        Q(address__icontains=query) | Q(user__display_name__icontains=query),
    ).order_by("address").values_list("address", "user__display_name")
    for address, name in colleagues[:SUGGESTIONS]:
        found.setdefault(address, writing.format_address(name, address))
    return JsonResponse({"addresses": list(found.values())[:SUGGESTIONS]})
