"""The folder list of the webmail's layout, for every page that extends
templates/webmail/base.html, whether or not its view passed the folders."""

from __future__ import annotations

from typing import Any

from django import template

from apps.webmail.folders import folder_entries

register = template.Library()


@register.inclusion_tag("webmail/_sidebar.html", takes_context=True)
def folder_sidebar(context: template.Context) -> dict[str, Any]:
    folders = context.get("folders")
    if folders is None:
        folders = folder_entries(context["request"].user.mailbox)
    return {"folders": folders, "current": context.get("current")}
