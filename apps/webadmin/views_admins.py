"""Administrators (superadmins only): list, create domain administrators and
assign them domains, edit, reset a second factor, remove."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from apps.directory import administrators, second_factor
from apps.directory.access import administrators_for, is_superadmin
from apps.directory.audit import Actor
from apps.directory.models import User
from apps.web.auth import admin_required
from apps.webadmin.directory_forms import AdminCreateForm, AdminEditForm, show_error
from apps.webadmin.paging import paginate, search_text
from mailhost.errors import MailhostError


def _superadmin_only(request: HttpRequest) -> None:
    if not is_superadmin(request.user):
        raise Http404


def _admin(request: HttpRequest, pk: int) -> User:
    _superadmin_only(request)
    return get_object_or_404(administrators_for(request.user), pk=pk)


@admin_required
def admin_list(request: HttpRequest) -> HttpResponse:
    _superadmin_only(request)
    query = search_text(request, "q")
    admins = administrators_for(request.user).order_by("email")
    if query:
        admins = admins.filter(email__contains=query)
    page = paginate(request, admins, rows=lambda q: q.prefetch_related(
        "administered_domains").annotate(two_factor=second_factor.enrolled_exists()))
    return render(request, "webadmin/directory/admin_list.html", {
        "section": "admins", "page": page, "q": query})


@sensitive_post_parameters("password")
@admin_required
def admin_create(request: HttpRequest) -> HttpResponse:
    _superadmin_only(request)
    form = AdminCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = administrators.create_administrator(
                data["email"], data["password"], role=data["role"], domains=data["domains"],
                display_name=data["display_name"], actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Administrator {user.email} created.")
            return redirect("webadmin:admin_list")
    return render(request, "webadmin/directory/admin_form.html", {
        "section": "admins", "form": form, "title": "New administrator"},
        status=400 if form.errors else 200)


@sensitive_post_parameters("password")
@admin_required
def admin_edit(request: HttpRequest, pk: int) -> HttpResponse:
    admin = _admin(request, pk)
    form = AdminEditForm(request.POST or None, initial={
        "display_name": admin.display_name, "role": admin.role, "is_active": admin.is_active,
        "domains": list(admin.administered_domains.all())})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            administrators.update_administrator(
                admin, role=data["role"], domains=data["domains"], is_active=data["is_active"],
                display_name=data["display_name"], password=data["password"] or None,
                actor=Actor.of(request))
        except MailhostError as error:
            show_error(form, error)
        else:
            messages.success(request, f"Administrator {admin.email} saved.")
            return redirect("webadmin:admin_list")
    return render(request, "webadmin/directory/admin_form.html", {
        "section": "admins", "form": form, "admin": admin, "title": admin.email,
        "two_factor": second_factor.is_enrolled(admin)}, status=400 if form.errors else 200)


@admin_required
@require_POST
def admin_reset_second_factor(request: HttpRequest, pk: int) -> HttpResponse:
    admin = _admin(request, pk)
    second_factor.reset(admin, actor=Actor.of(request))
    messages.success(request, f"Two-factor sign-in of {admin.email} is off; they can set it "
                              "up again.")
    return redirect("webadmin:admin_edit", pk=admin.pk)


@admin_required
def admin_delete(request: HttpRequest, pk: int) -> HttpResponse:
    admin = _admin(request, pk)
    error = None
    if request.method == "POST":
        try:
            administrators.delete_administrator(admin, actor=Actor.of(request))
        except MailhostError as refused:
            error = refused.message
        else:
            messages.success(request, f"Administrator {admin.email} removed.")
            return redirect("webadmin:admin_list")
    return render(request, "webadmin/directory/confirm_delete.html", {
        "section": "admins", "object": admin.email, "cancel": "webadmin:admin_list",
        "error": error, "consequence": "The account can no longer sign in to the panel or "
                                       "the API."}, status=400 if error else 200)
