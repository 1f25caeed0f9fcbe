"""The folder list of the webmail's layout, for every page that extends
templates/webmail/base.html, whether or not its view passed the folders; and
a filter for host names shown in narrow columns."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.webmail.folders import folder_entries

register = template.Library()


@register.inclusion_tag("webmail/_sidebar.html", takes_context=True)
def folder_sidebar(context: template.Context) -> dict[str, Any]:
    folders = context.get("folders")
    if folders is None:
        folders = folder_entries(context["request"].user.mailbox)
    return {"folders": folders, "current": context.get("current")}


@register.filter
def host_name_breaks(name: str) -> SafeString:
    """``name`` escaped, allowed to wrap after its dots only: a narrow column
    then shows "mail." / "example.org", never "mail.exam" / "ple.org"."""
    return format_html_join(format_html("{}<wbr>", "."), "{}",
                            ((label,) for label in str(name).split(".")))
