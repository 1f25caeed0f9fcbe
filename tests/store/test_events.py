"""Folder change events over Redis pub/sub (apps/store/events.py)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import redis
from redis.connection import parse_url

from apps.store import events
from apps.store.events import FolderChanged

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"),
                                reason="the events go over Redis only with REDIS_URL")


def _subscribed(url: str, channel: str) -> redis.client.PubSub:
    subscriber = redis.Redis.from_url(url).pubsub()
    subscriber.subscribe(channel)
    # The confirmation first, so that nothing published after this is missed.
    confirmation = subscriber.get_message(timeout=10)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    return subscriber


def test_installations_on_other_redis_databases_do_not_hear_each_other(settings):
    ours = settings.REDIS_URL
    # Another installation on the next database of the same server.
    theirs = urlsplit(ours)._replace(path=f"/{(parse_url(ours).get('db', 0) + 1) % 16}").geturl()
    our_listener = _subscribed(ours, events.channel())
    settings.REDIS_URL = theirs
    their_listener = _subscribed(theirs, events.channel())

    # The other installation publishes a change of its folder 2 of mailbox 1 …
    events.publish([FolderChanged(1, 2, 99)])
    settings.REDIS_URL = ours
    # … then this one a change of its own folder with the same ids.
    events.publish([FolderChanged(1, 2, 3)])

    heard = our_listener.get_message(ignore_subscribe_messages=True, timeout=10)
    assert heard is not None
    # Redis delivers in publishing order: the other's change would have come first.
    assert FolderChanged.from_json(heard["data"]) == FolderChanged(1, 2, 3)
    heard = their_listener.get_message(ignore_subscribe_messages=True, timeout=10)
    assert heard is not None
    assert FolderChanged.from_json(heard["data"]) == FolderChanged(1, 2, 99)
    our_listener.close()
    their_listener.close()
