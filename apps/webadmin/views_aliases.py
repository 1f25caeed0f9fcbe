"""Aliases in the admin panel: list, create (a catch-all ``@domain`` too),
edit destinations, delete; looked up through apps/directory/access.py."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from apps.directory import services
from apps.directory.access import aliases_for, may_manage_address
from apps.directory.audit import Actor
from apps.directory.models import Alias
from apps.web.auth import admin_required
from apps.webadmin.directory_forms import AliasCreateForm, AliasEditForm, lines, show_error
from apps.webadmin.paging import paginate, search_text
from mailhost.errors import MailhostError


def _alias(request: HttpRequest, pk: int) -> Alias:
    return get_object_or_404(aliases_for(request.user).select_related("domain"), pk=pk)


@admin_required
def alias_list(request: HttpRequest) -> HttpResponse:
    query = search_text(request, "q")
    domain = search_text(request, "domain")
    aliases = aliases_for(request.user)
    if query:
        aliases = aliases.filter(address__contains=query)
    if domain:
        aliases = aliases.filter(domain__name=domain)
    page = paginate(request, aliases)
    return render(request, "webadmin/directory/alias_list.html", {
        "section": "aliases", "page": page, "q": query, "domain": domain})


@admin_required
def alias_create(request: HttpRequest) -> HttpResponse:
    domain = search_text(request, "domain")
    form = AliasCreateForm(request.POST or None,
                           initial={"address": f"@{domain}" if domain else ""})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if not may_manage_address(request.user, data["address"]):
            form.add_error("address", "You do not administer this address's domain.")
        else:
            try:
                alias = services.create_alias(data["address"], lines(data["destinations"]),
                                              actor=Actor.of(request))
            except MailhostError as error:
                show_error(form, error)
            else:
                messages.success(request, f"Alias {alias.address} created.")
                return redirect("webadmin:alias_list")
    return render(request, "webadmin/directory/alias_form.html", {
        "section": "aliases", "form": form, "title": "New alias"},
        status=400 if form.errors else 200)


@admin_required
def alias_edit(request: HttpRequest, pk: int) -> HttpResponse:
    alias = _alias(request, pk)
    form = AliasEditForm(request.POST or None, initial={
        "destinations": "\n".join(alias.destinations), "active": alias.active})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.update_alias(alias, destinations=lines(data["destinations"]),
                                  active=data["active"], actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Alias {alias.address} saved.")
            return redirect("webadmin:alias_list")
    return render(request, "webadmin/directory/alias_form.html", {
        "section": "aliases", "form": form, "alias": alias, "title": alias.address},
        status=400 if form.errors else 200)


@admin_required
def alias_delete(request: HttpRequest, pk: int) -> HttpResponse:
    alias = _alias(request, pk)
    if request.method == "POST":
        services.delete_alias(alias, actor=Actor.of(request))
        messages.success(request, f"Alias {alias.address} deleted.")
        return redirect("webadmin:alias_list")
    return render(request, "webadmin/directory/confirm_delete.html", {
        "section": "aliases", "object": alias.address, "cancel": "webadmin:alias_list",
        "consequence": "Mail to this address is refused from then on (unless a catch-all "
                       "takes it)."})
