"""Mailhost settings: everything comes from the environment, with defaults that
need no server (SQLite, a filesystem broker, a file cache, a self-signed
certificate), and everything an instance writes lives under MAILHOST_DATA_DIR.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mailhost.env import env_bool, env_int, env_list, env_port, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("MAILHOST_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    configured = env_str("SECRET_KEY")
    if configured:
        return configured
    # One random key per data directory, kept so that sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("MAILHOST_DEBUG", False)
ALLOWED_HOSTS = env_list("MAILHOST_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("MAILHOST_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "apps.directory",
    "apps.store",
    "apps.smtp",
    "apps.pop3",
    "apps.mailservers",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.api",
    "apps.antispam",
    "apps.delivery",
    "apps.sieve",
    "apps.web",
    "apps.webadmin",
    "apps.webmail",
    "apps.certificates",
    "apps.transfer",
]

MIDDLEWARE = [
    # Before anything reads the Host header: the CA asks for every name it validates.
    "apps.web.middleware.AcmeChallengeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.web.middleware.SecurityHeadersMiddleware",
    # Before Django's Host check: autoconfig./mta-sts. names of hosted domains.
    "apps.web.middleware.ServiceHostMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mailhost.urls"
WSGI_APPLICATION = "mailhost.wsgi.application"
ASGI_APPLICATION = "mailhost.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.web.context_processors.navigation",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")


def _sqlite(path: Path | str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Listener threads keep their connection: opening one (and its PRAGMAs)
        # per unit of work cost more than the work itself.
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            # DESIGN.md "Where the speed comes from": writers queue instead of
            # failing, and an acknowledged message survives power loss.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # Prepared statements kept per connection (Python's default: 128).
            # Each listener thread has its own connection, and most of what
            # they run is a few hot reads plus inserts whose SQL varies with
            # the batch size: 128 per thread was ~10 MiB of a listener's
            # memory for little CPU saved.
            "cached_statements": env_int("MAILHOST_SQLITE_STATEMENT_CACHE", 16),
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=FULL;"
                "PRAGMA busy_timeout=30000;"
                "PRAGMA foreign_keys=ON;"
            ),
        },
        # A file, not memory, so that listener processes started by tests
        # share the test database.
        "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
    }


if DATABASE_URL.startswith("sqlite:"):
    DATABASES = {"default": _sqlite(dj_database_url.parse(DATABASE_URL)["NAME"])}
elif DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {"default": _sqlite(DATA_DIR / "mailhost.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "directory.User"
AUTHENTICATION_BACKENDS = ["apps.directory.backends.MailhostBackend"]

# Argon2 first; PBKDF2 stays readable for hashes made elsewhere.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
if env_bool("MAILHOST_FAST_PASSWORD_HASHER", False):
    # Tests only: hashing is not what they measure.
    PASSWORD_HASHERS.insert(0, "django.contrib.auth.hashers.MD5PasswordHasher")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- cache, broker ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "mailhost.rediscache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("MAILHOST_CACHE_PREFIX", "mailhost"),
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    # Shared between the processes of one instance, and nothing to run.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport, writing each message whole (mailhost/broker.py).
    CELERY_BROKER_TRANSPORT = "mailhost.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange tables: under the data dir, not in the worker's cwd (./control).
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # A worker looks for new tasks this often (kombu's default is every
        # second, which caps a worker at about one task per second).
        "polling_interval": env_int("MAILHOST_FILESYSTEM_BROKER_POLL_MS", 20) / 1000,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("MAILHOST_CELERY_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Beat may run on every node (a cluster has no single beat): each periodic task
# goes through apps.store.tasks.run_periodic, which runs it only where it takes
# the task's lease (apps/store/leases.py). The heartbeat is per node, unleased.
MAILHOST_LEASE_SECONDS = env_int("MAILHOST_LEASE_SECONDS", 60)


def _leased(task: str, period: float) -> dict[str, object]:
    return {"task": "apps.store.tasks.run_periodic", "schedule": period,
            "args": (task, period)}


CELERY_BEAT_SCHEDULE = {
    "collect-unreferenced-blobs": _leased("apps.store.tasks.collect_garbage", 3600.0),
    # Index rows that a lost index_blobs task left unwritten (apps/store/textindex.py).
    "index-unindexed-blobs": _leased("apps.store.tasks.index_unindexed", 600.0),
    "sweep-antispam-spool": _leased(
        "apps.antispam.tasks.sweep_spool",
        float(env_int("MAILHOST_SPOOL_SWEEP_INTERVAL", 60))),
    "run-outbound-queue": _leased(
        "apps.delivery.tasks.run_queue", float(env_int("MAILHOST_QUEUE_INTERVAL", 5))),
    # The dashboard's worker and beat health, and the message trace's retention.
    "heartbeat": {
        "task": "apps.store.tasks.heartbeat",
        "schedule": float(env_int("MAILHOST_WORKER_HEARTBEAT_INTERVAL", 30)),
    },
    "prune-message-trace": _leased("apps.store.tasks.prune_trace", 3600.0),
    # RFC 8460: each finished day's TLS reports, once (apps/delivery/tlsrpt.py).
    "send-tls-reports": _leased("apps.delivery.tasks.send_tls_reports", 3600.0),
    # Records kept current in zones Mailhost publishes to (apps/directory/dnspublish.py).
    "publish-dns": _leased("apps.directory.tasks.publish_dns", 3600.0),
    # New DKIM keys, their records and the withdrawal of old ones (apps/directory).
    "rotate-dkim-keys": _leased("apps.directory.tasks.rotate_dkim_keys", 3600.0),
    # Does nothing unless ACME is on and the certificate is due (apps/certificates).
    "renew-certificate": _leased("apps.certificates.tasks.renew", 12 * 3600.0),
}

SESSION_ENGINE = "django.contrib.sessions.backends.db"
LOGIN_URL = "web:sign_in"
# Cookies: never readable by scripts, not sent on cross-site sub-requests, and
# HTTPS-only once the site is served over TLS (MAILHOST_SECURE_COOKIES=1).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("MAILHOST_SECURE_COOKIES", False)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "SAMEORIGIN"  # the webmail frames a message's sanitised HTML
# WebAuthn second factors (apps/directory/security_keys.py): the relying party
# ID is the host the sign-in page was asked for, unless set here to a
# registrable suffix shared by every host name that serves it (WebAuthn §5.1.3:
# "example.com" lets keys enrolled on mail.example.com work on panel.example.com).
MAILHOST_WEBAUTHN_RP_ID = env_str("MAILHOST_WEBAUTHN_RP_ID", "")

# --- REST API -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mailhost provisioning API",
    "DESCRIPTION": "Domains, mailboxes, aliases, quotas and API tokens.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # An account's role, and the narrower choice of an administrator's role.
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "apps.directory.models.Role",
        "AdministratorRoleEnum": ["domainadmin", "superadmin"],
    },
}

# --- i18n, static -------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns (an error in tests) when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
# Static files are served from the app and static/ directories directly, so a
# fresh checkout and the test servers need no collectstatic step.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- mail ---------------------------------------------------------------------
MAILHOST_HOSTNAME = env_str("MAILHOST_HOSTNAME", socket.getfqdn() or "localhost")
MAILHOST_STORAGE_ROOT = Path(
    env_str("MAILHOST_STORAGE_ROOT", str(DATA_DIR / "messages"))
).resolve()
# Where message blobs live: empty (or "local") for MAILHOST_STORAGE_ROOT,
# "s3://bucket/prefix" for an S3-compatible object store (apps/store/s3.py).
MAILHOST_BLOB_STORE = env_str("MAILHOST_BLOB_STORE")
MAILHOST_S3_ENDPOINT = env_str("MAILHOST_S3_ENDPOINT")  # empty: AWS itself
MAILHOST_S3_REGION = env_str("MAILHOST_S3_REGION", "us-east-1")
# Path-style URLs (endpoint/bucket/key); unset: on when an endpoint is given.
MAILHOST_S3_PATH_STYLE = (env_bool("MAILHOST_S3_PATH_STYLE", False)
                          if "MAILHOST_S3_PATH_STYLE" in os.environ else None)
# The standard AWS names, with the NAME_FILE form for secrets; empty: boto3's
# own credential chain (an instance role, ~/.aws).
MAILHOST_S3_ACCESS_KEY_ID = env_str("AWS_ACCESS_KEY_ID")
MAILHOST_S3_SECRET_ACCESS_KEY = env_str("AWS_SECRET_ACCESS_KEY")
MAILHOST_S3_UPLOAD_THREADS = env_int("MAILHOST_S3_UPLOAD_THREADS", 16)
# A local read cache of whole blobs, least recently used evicted first.
MAILHOST_S3_CACHE_DIR = Path(
    env_str("MAILHOST_S3_CACHE_DIR", str(DATA_DIR / "blob-cache"))).resolve()
MAILHOST_S3_CACHE_MB = env_int("MAILHOST_S3_CACHE_MB", 256)
MAILHOST_BIND = env_str("MAILHOST_BIND", "127.0.0.1")
MAILHOST_PORTS = {
    "smtp": env_port("SMTP_PORT", 2525),
    "submission": env_port("SUBMISSION_PORT", 2587),
    "smtps": env_port("SMTPS_PORT", 2465),
    "imap": env_port("IMAP_PORT", 1143),
    "imaps": env_port("IMAPS_PORT", 1993),
    "pop3": env_port("POP3_PORT", 1110),
    "pop3s": env_port("POP3S_PORT", 1995),
    # RFC 5804 §1.8: 4190, plus the offset of the IMAP and POP3 ports (+1000).
    "managesieve": env_port("MANAGESIEVE_PORT", 5190),
}
# Empty: a self-signed pair is generated into the data directory on first start.
MAILHOST_TLS_CERT = env_str("MAILHOST_TLS_CERT")
MAILHOST_TLS_KEY = env_str("MAILHOST_TLS_KEY")
# ACME (RFC 8555), off while the directory URL is empty: the certificate for
# MAILHOST_HOSTNAME and MAILHOST_ACME_NAMES ("mta-sts.{domain}" is one name per
# hosted domain) is written over the pair above and renewed by beat when fewer
# than MAILHOST_ACME_RENEW_DAYS remain. http-01 is answered by the web process;
# with a DNS hook command, dns-01 instead ("<hook> set|clear <record> <value>").
MAILHOST_ACME_DIRECTORY = env_str("MAILHOST_ACME_DIRECTORY")
MAILHOST_ACME_EMAIL = env_str("MAILHOST_ACME_EMAIL")
MAILHOST_ACME_NAMES = env_list("MAILHOST_ACME_NAMES")
MAILHOST_ACME_RENEW_DAYS = env_int("MAILHOST_ACME_RENEW_DAYS", 30)
MAILHOST_ACME_DNS_HOOK = env_str("MAILHOST_ACME_DNS_HOOK")
# A private CA's HTTPS certificate (pebble, step-ca); empty: the system's trust.
MAILHOST_ACME_CA_BUNDLE = env_str("MAILHOST_ACME_CA_BUNDLE")
# How often (at most, on a TLS handshake) listeners look in the database for a
# certificate that another node renewed.
MAILHOST_ACME_CHECK_SECONDS = env_int("MAILHOST_ACME_CHECK_SECONDS", 60)

MAILHOST_MAX_MESSAGE_SIZE = env_int("MAILHOST_MAX_MESSAGE_SIZE", 50 * 1024 * 1024)
MAILHOST_SMTP_MAX_RECIPIENTS = env_int("MAILHOST_SMTP_MAX_RECIPIENTS", 100)
MAILHOST_SMTP_TIMEOUT = env_int("MAILHOST_SMTP_TIMEOUT", 300)
MAILHOST_SMTP_MAX_LINE_LENGTH = env_int("MAILHOST_SMTP_MAX_LINE_LENGTH", 65536)
MAILHOST_DEFAULT_QUOTA = env_int("MAILHOST_DEFAULT_QUOTA", 1024 * 1024 * 1024)
MAILHOST_SUBADDRESS_DELIMITER = env_str("MAILHOST_SUBADDRESS_DELIMITER", "+")
MAILHOST_ALIAS_MAX_DEPTH = env_int("MAILHOST_ALIAS_MAX_DEPTH", 10)
# Each process keeps recipient resolutions this long at most; any directory
# write invalidates them in every process at once (apps/directory/services.py).
MAILHOST_DIRECTORY_CACHE_SECONDS = env_int("MAILHOST_DIRECTORY_CACHE_SECONDS", 10)
MAILHOST_SHUTDOWN_GRACE = env_int("MAILHOST_SHUTDOWN_GRACE", 30)
# Group commit: deliveries arriving within this window share one transaction.
MAILHOST_GROUP_COMMIT_MAX = env_int("MAILHOST_GROUP_COMMIT_MAX", 64)

# Authentication lockout (counters in the cache).
MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN = env_int("MAILHOST_AUTH_MAX_FAILURES_PER_LOGIN", 10)
MAILHOST_AUTH_MAX_FAILURES_PER_IP = env_int("MAILHOST_AUTH_MAX_FAILURES_PER_IP", 50)
MAILHOST_AUTH_LOCKOUT_SECONDS = env_int("MAILHOST_AUTH_LOCKOUT_SECONDS", 900)
MAILHOST_AUTH_CACHE_SECONDS = env_int("MAILHOST_AUTH_CACHE_SECONDS", 60)
MAILHOST_AUTH_CONCURRENCY = env_int("MAILHOST_AUTH_CONCURRENCY", 4)
MAILHOST_BLOB_GRACE_SECONDS = env_int("MAILHOST_BLOB_GRACE_SECONDS", 24 * 3600)

# Inbound checks (apps/antispam). Off: mail is filed into INBOX unchecked.
MAILHOST_ANTISPAM = env_bool("MAILHOST_ANTISPAM", True)
# Before-queue filtering: check and file before the 250 instead of in a worker.
MAILHOST_ANTISPAM_INLINE = env_bool("MAILHOST_ANTISPAM_INLINE", False)
# Checks slower than this (seconds) give way: the message is filed unchecked.
MAILHOST_ANTISPAM_TIMEOUT = env_int("MAILHOST_ANTISPAM_TIMEOUT", 30)
# Spooled messages checked and filed together, in one transaction.
MAILHOST_SPOOL_BATCH = env_int("MAILHOST_SPOOL_BATCH", 100)
MAILHOST_SPAM_THRESHOLD = float(env_str("MAILHOST_SPAM_THRESHOLD", "9.0"))
# A user's own classifier (trained by moving mail into and out of Junk) weighs
# in once it has learnt this many messages.
MAILHOST_BAYES_USER_MIN_MESSAGES = env_int("MAILHOST_BAYES_USER_MIN_MESSAGES", 10)
# A link's registrable domain first seen by this server within this many days
# scores LINK_FRESH_DOMAIN (once the server has watched for that long).
MAILHOST_PHISHING_FRESH_DAYS = env_int("MAILHOST_PHISHING_FRESH_DAYS", 7)
# The classifier's day-one model (apps/antispam/starter) under the site's own
# until that has learnt enough; off: untrained until someone trains.
MAILHOST_BAYES_STARTER = env_bool("MAILHOST_BAYES_STARTER", True)
# Every DNS query (sender checks, MX lookups, the DNS page) goes through this
# class (mailhost/dns.py); tests name a fake.
MAILHOST_DNS_RESOLVER = env_str("MAILHOST_DNS_RESOLVER", "mailhost.dns.DnsPythonResolver")
MAILHOST_DNS_TIMEOUT = env_int("MAILHOST_DNS_TIMEOUT", 5)
# A local validating resolver is best; empty: the system's (/etc/resolv.conf).
MAILHOST_DNS_NAMESERVERS = env_list("MAILHOST_DNS_NAMESERVERS")
MAILHOST_DNS_PORT = env_port("MAILHOST_DNS_PORT", 53)
# TSIG keys for publishing by RFC 2136 updates (apps/directory/dnspublish.py), for
# targets whose secret is not entered in the panel: "[algorithm:]name:secret"
# entries, one a line (MAILHOST_DNS_TSIG_KEYS_FILE) or comma-separated.
MAILHOST_DNS_TSIG_KEYS = env_str("MAILHOST_DNS_TSIG_KEYS")
# DKIM key rotation (apps/directory/dkim_rotation.py): a signing key is replaced
# after this many days (0: never); the replaced key stays published this many
# days more, for mail signed with it still queued or in transit, then is withdrawn.
MAILHOST_DKIM_ROTATE_DAYS = env_int("MAILHOST_DKIM_ROTATE_DAYS", 180)
MAILHOST_DKIM_GRACE_DAYS = env_int("MAILHOST_DKIM_GRACE_DAYS", 7)
MAILHOST_DNSBL_ZONES = env_list("MAILHOST_DNSBL_ZONES")
MAILHOST_SPF_FAIL_ACTION = env_str("MAILHOST_SPF_FAIL_ACTION", "mark")  # or "reject"
MAILHOST_GREYLIST_DELAY = env_int("MAILHOST_GREYLIST_DELAY", 300)
MAILHOST_GREYLIST_WINDOW = env_int("MAILHOST_GREYLIST_WINDOW", 4 * 3600)
MAILHOST_GREYLIST_RETENTION = env_int("MAILHOST_GREYLIST_RETENTION", 36 * 24 * 3600)
MAILHOST_RATE_CONNECTIONS_PER_MINUTE = env_int("MAILHOST_RATE_CONNECTIONS_PER_MINUTE", 60)
MAILHOST_RATE_MESSAGES_PER_MINUTE = env_int("MAILHOST_RATE_MESSAGES_PER_MINUTE", 300)
# As Postfix exempts $mynetworks: local reinjection is not rate limited.
MAILHOST_RATE_LIMIT_EXEMPT = env_list("MAILHOST_RATE_LIMIT_EXEMPT", ["127.0.0.0/8", "::1/128"])

# Connection limits of each listener (SMTP, submission, IMAP, POP3, with and without
# implicit TLS), in total and per client IP; 0: none. Peers in
# MAILHOST_RATE_LIMIT_EXEMPT are not counted. With several listener processes on one
# port, each process takes its share (apps/mailservers/limits.py).
MAILHOST_MAX_CONNECTIONS = env_int("MAILHOST_MAX_CONNECTIONS", 5000)
MAILHOST_MAX_CONNECTIONS_PER_IP = env_int("MAILHOST_MAX_CONNECTIONS_PER_IP", 50)
# Seconds a client may stay silent after the greeting (or take to finish an implicit
# TLS handshake) before it is closed; the protocols' idle timeouts rule after its
# first command. 0: no such timeout.
MAILHOST_GREETING_TIMEOUT = env_int("MAILHOST_GREETING_TIMEOUT", 60)
# Networks of the TCP load balancers in front of the listeners (HAProxy's
# send-proxy / send-proxy-v2): connections from there start with a PROXY protocol
# header that gives the client's address; from elsewhere, such a header is refused.
# Empty: no PROXY protocol (apps/mailservers/limits.py).
MAILHOST_PROXY_PROTOCOL_FROM = env_list("MAILHOST_PROXY_PROTOCOL_FROM")

# POP3. RFC 2449 §4 allows command lines of 255 octets; SASL responses may be longer.
MAILHOST_POP3_MAX_LINE = env_int("MAILHOST_POP3_MAX_LINE", 1024)
MAILHOST_POP3_MAX_BAD_COMMANDS = env_int("MAILHOST_POP3_MAX_BAD_COMMANDS", 10)
# RFC 1939 §3: an autologout timer of at least 10 minutes.
MAILHOST_POP3_IDLE_TIMEOUT = env_int("MAILHOST_POP3_IDLE_TIMEOUT", 600)
# The one-session-per-mailbox lock outlives a dead listener process this long.
MAILHOST_POP3_LOCK_SECONDS = env_int("MAILHOST_POP3_LOCK_SECONDS", 300)

# IMAP limits: a command line (outside literals), a literal (APPENDLIMIT), commands
# before login and bad commands before the connection is dropped, idle seconds.
MAILHOST_IMAP_MAX_LINE = env_int("MAILHOST_IMAP_MAX_LINE", 64 * 1024)
MAILHOST_IMAP_MAX_LITERAL = env_int("MAILHOST_IMAP_MAX_LITERAL", 50 * 1024 * 1024)
MAILHOST_IMAP_MAX_COMMANDS_BEFORE_AUTH = env_int("MAILHOST_IMAP_MAX_COMMANDS_BEFORE_AUTH", 50)
MAILHOST_IMAP_MAX_BAD_COMMANDS = env_int("MAILHOST_IMAP_MAX_BAD_COMMANDS", 20)
MAILHOST_IMAP_TIMEOUT = env_int("MAILHOST_IMAP_TIMEOUT", 30 * 60)
# Password logins (IMAP, POP3, submission) without TLS are refused except from
# loopback peers, when this is 1.
MAILHOST_PLAINTEXT_AUTH_LOOPBACK = env_bool("MAILHOST_PLAINTEXT_AUTH_LOOPBACK", True)
# Submission (587/465) and the outbound queue.
MAILHOST_SUBMISSION_MAX_RECIPIENTS = env_int("MAILHOST_SUBMISSION_MAX_RECIPIENTS", 100)
MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE = env_int(
    "MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE", 25 * 1024 * 1024)
MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = env_int(
    "MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR", 500)
# Vacation auto-replies: at most one per sender per this many days (RFC 3834 §2).
MAILHOST_VACATION_INTERVAL_DAYS = env_int("MAILHOST_VACATION_INTERVAL_DAYS", 7)
# A mail import started from the panel that has shown no progress for this many
# seconds is taken for dead (its worker gone) and can be resumed (apps/transfer/jobs.py).
MAILHOST_IMPORT_STALE_SECONDS = env_int("MAILHOST_IMPORT_STALE_SECONDS", 900)
# Postfix-style transport map: "example.net=127.0.0.1:2626,*=smtp.relay.test:587".
MAILHOST_TRANSPORTS = env_str("MAILHOST_TRANSPORTS")
MAILHOST_DELIVERY_PORT = env_port("MAILHOST_DELIVERY_PORT", 25)
MAILHOST_DELIVERY_TIMEOUT = env_int("MAILHOST_DELIVERY_TIMEOUT", 60)
# Sender Rewriting Scheme for mail forwarded outside (apps/delivery/srs.py).
# The secret signs the rewritten senders (empty: derived from SECRET_KEY); old
# secrets still verify the bounces to what they signed. The domain (empty: the
# forwarding address's own) is hosted here and names this server in its SPF.
MAILHOST_SRS = env_bool("MAILHOST_SRS", True)
MAILHOST_SRS_SECRET = env_str("MAILHOST_SRS_SECRET")
MAILHOST_SRS_OLD_SECRETS = env_list("MAILHOST_SRS_OLD_SECRETS")
MAILHOST_SRS_MAX_AGE_DAYS = env_int("MAILHOST_SRS_MAX_AGE_DAYS", 21)
MAILHOST_SRS_DOMAIN = env_str("MAILHOST_SRS_DOMAIN")
# RFC 5321 §4.5.4.1: give up after 4-5 days; tell the sender about a delay first.
MAILHOST_QUEUE_LIFETIME = env_int("MAILHOST_QUEUE_LIFETIME", 5 * 24 * 3600)
MAILHOST_QUEUE_DELAY_NOTICE = env_int("MAILHOST_QUEUE_DELAY_NOTICE", 4 * 3600)
MAILHOST_QUEUE_RETRY_MIN = env_int("MAILHOST_QUEUE_RETRY_MIN", 300)
MAILHOST_QUEUE_RETRY_MAX = env_int("MAILHOST_QUEUE_RETRY_MAX", 4 * 3600)
# A claim not finished in this time (a dead worker) is taken again.
MAILHOST_QUEUE_CLAIM_SECONDS = env_int("MAILHOST_QUEUE_CLAIM_SECONDS", 900)
MAILHOST_QUEUE_BATCH = env_int("MAILHOST_QUEUE_BATCH", 200)
# Entries per claim (one delivery task, one connection): several claims for a
# busy destination let several workers send to it side by side.
MAILHOST_QUEUE_CLAIM_SIZE = env_int("MAILHOST_QUEUE_CLAIM_SIZE", 50)
# A delivery task keeps its connection and goes on with the destination's
# entries that fall due meanwhile, for up to this long.
MAILHOST_QUEUE_FOLLOW_UP_SECONDS = env_int("MAILHOST_QUEUE_FOLLOW_UP_SECONDS", 10)
# Wake the queue runner when mail is queued, not only at its next beat: at most
# one wake-up pending at a time (apps/delivery/services.py), so that a burst of
# mail does not bury the delivery tasks under queue runs, on any broker.
MAILHOST_QUEUE_KICK = env_bool("MAILHOST_QUEUE_KICK", True)
# A pending wake-up whose run has not started after this long (its task lost)
# stops holding back the next one.
MAILHOST_QUEUE_KICK_TIMEOUT = env_int("MAILHOST_QUEUE_KICK_TIMEOUT", 10)

# --- listener threads (runmailservers) ---------------------------------------
# Threads that run the listeners' database and cache work (each may hold a
# database connection): sessions wait on round trips there, not on the CPU.
# SQLite has no round trips to wait on, and each thread's connection keeps
# its own page and statement caches: 8 measured as fast as 16 for 5-8 MiB less.
# On PostgreSQL 4 measured less CPU per IMAP operation than 16 (two IMAP
# processes: 1.59-2.26 against 2.25-2.44 ms) and no less ingest (2.2-2.6 ms
# per message either way, as many messages a second or more).
MAILHOST_LISTENER_THREADS = env_int(
    "MAILHOST_LISTENER_THREADS",
    8 if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" else 4)
# Processes serving the SMTP listeners on the same ports
# (apps/mailservers/processes.py). One process is bound by the interpreter
# lock, but SMTP ingest on a shared 2-core machine did not measure faster with
# a second (the worker takes the other core), and each costs its memory: raise
# it (to the core count) on a host whose cores are free for mail.
MAILHOST_LISTENER_PROCESSES = env_int("MAILHOST_LISTENER_PROCESSES", 1)
# Processes serving IMAP and POP3 on the same ports: one IMAP process keeps one
# core busy where Dovecot, a process per connection, uses every core (README,
# "Where the time goes"): two measured 0.48 -> 0.70 of Dovecot on 2 idle cores. The
# processes tell each other of folder changes over Redis, or without it over
# Unix datagrams (apps/store/events.py). Default: the core count, at most 4.
MAILHOST_IMAP_PROCESSES = env_int("MAILHOST_IMAP_PROCESSES", min(os.cpu_count() or 1, 4))
# How often an IMAP listener process looks whether watched folders changed
# without a notice reaching it (a lost datagram, Redis down): the safety net.
MAILHOST_IMAP_POLL_SECONDS = env_int("MAILHOST_IMAP_POLL_SECONDS", 1)
# --- end of listener threads ---------------------------------------------------

# Message trace and dashboard (apps/store/trace.py, apps/store/health.py).
MAILHOST_TRACE_RETENTION_DAYS = env_int("MAILHOST_TRACE_RETENTION_DAYS", 30)
MAILHOST_HEARTBEAT_INTERVAL = env_int("MAILHOST_HEARTBEAT_INTERVAL", 10)
MAILHOST_WORKER_HEARTBEAT_INTERVAL = env_int("MAILHOST_WORKER_HEARTBEAT_INTERVAL", 30)

# --- what clients and other servers are told (autoconfig, SRV, MTA-STS) --------
# The name mail programs connect to and the ports they use: the standard ones,
# whatever ports the listeners bind here (a proxy or port forward in between).
MAILHOST_PUBLIC_HOSTNAME = env_str("MAILHOST_PUBLIC_HOSTNAME", MAILHOST_HOSTNAME)
MAILHOST_PUBLIC_PORTS = {
    "imaps": env_port("MAILHOST_PUBLIC_IMAPS_PORT", 993),
    "imap": env_port("MAILHOST_PUBLIC_IMAP_PORT", 143),
    "pop3s": env_port("MAILHOST_PUBLIC_POP3S_PORT", 995),
    "smtps": env_port("MAILHOST_PUBLIC_SMTPS_PORT", 465),
    "submission": env_port("MAILHOST_PUBLIC_SUBMISSION_PORT", 587),
    "managesieve": env_port("MAILHOST_PUBLIC_MANAGESIEVE_PORT", 4190),  # RFC 5804 §1.8
}
# Our MTA-STS policy (RFC 8461 §3.2): "testing", "enforce" or "none", and how
# long senders keep it (seconds).
MAILHOST_MTA_STS_MODE = env_str("MAILHOST_MTA_STS_MODE", "testing")
if MAILHOST_MTA_STS_MODE not in ("testing", "enforce", "none"):
    raise ImproperlyConfigured(
        f"MAILHOST_MTA_STS_MODE={MAILHOST_MTA_STS_MODE!r} is not testing, enforce or none")
MAILHOST_MTA_STS_MAX_AGE = env_int("MAILHOST_MTA_STS_MAX_AGE", 7 * 24 * 3600)
# Where TLS reports go (RFC 8460 §3); empty: postmaster@ each domain.
MAILHOST_TLSRPT_ADDRESS = env_str("MAILHOST_TLSRPT_ADDRESS")
# The TLS reports we send other domains (RFC 8460, apps/delivery/tlsrpt.py): their
# From address (DKIM-signed when its domain is hosted here; empty:
# tls-reports@MAILHOST_HOSTNAME), the organization named in them (empty:
# MAILHOST_HOSTNAME) and how many days the counters are kept.
MAILHOST_TLSRPT_FROM = env_str("MAILHOST_TLSRPT_FROM")
MAILHOST_TLSRPT_ORGANIZATION = env_str("MAILHOST_TLSRPT_ORGANIZATION")
MAILHOST_TLSRPT_KEEP_DAYS = env_int("MAILHOST_TLSRPT_KEEP_DAYS", 30)
# Other domains' MTA-STS policies, enforced on outbound delivery: the HTTPS port
# their policy hosts are fetched from, and a CA bundle trusted for those hosts and
# their MX certificates instead of the system's (empty: the system's; tests).
MAILHOST_MTA_STS_FETCH_PORT = env_port("MAILHOST_MTA_STS_FETCH_PORT", 443)
MAILHOST_MTA_STS_CA_FILE = env_str("MAILHOST_MTA_STS_CA_FILE")
# Prometheus metrics (mailhost/metrics.py). Each process kind (web, listeners,
# workers) keeps its multi-process files in a directory of its own under
# MAILHOST_METRICS_DIR. The listener and worker ports are off when unset (0: a
# free port, logged); /metrics on the web port answers the networks listed, or
# anyone presenting MAILHOST_METRICS_TOKEN as a bearer token.
MAILHOST_METRICS_DIR = Path(env_str("MAILHOST_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()
# prometheus_client reads its directory from the environment. Processes whose
# entry point names no kind (management commands, tests) count in "other".
(MAILHOST_METRICS_DIR / "other").mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(MAILHOST_METRICS_DIR / "other")
MAILHOST_METRICS_PORT = (env_port("MAILHOST_METRICS_PORT", 0)
                         if env_str("MAILHOST_METRICS_PORT") else None)
MAILHOST_WORKER_METRICS_PORT = (env_port("MAILHOST_WORKER_METRICS_PORT", 0)
                                if env_str("MAILHOST_WORKER_METRICS_PORT") else None)
MAILHOST_METRICS_BIND = env_str("MAILHOST_METRICS_BIND", "127.0.0.1")
MAILHOST_METRICS_ALLOWED_NETWORKS = env_list("MAILHOST_METRICS_ALLOWED_NETWORKS",
                                             ["127.0.0.0/8", "::1/128"])
MAILHOST_METRICS_TOKEN = env_str("MAILHOST_METRICS_TOKEN")

# --- logging ------------------------------------------------------------------
(DATA_DIR / "logs").mkdir(exist_ok=True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(DATA_DIR / "logs" / "mailhost.log"),
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["console", "file"], "level": env_str("MAILHOST_LOG_LEVEL", "INFO")},
    "loggers": {
        # aiosmtpd logs every command line at INFO; our own lines say what matters.
        "mail.log": {"level": "WARNING"},
    },
}

# --- Sieve (apps/sieve, README "Sieve filters and ManageSieve") --------------------
MAILHOST_SIEVE_MAX_SCRIPT_SIZE = env_int("MAILHOST_SIEVE_MAX_SCRIPT_SIZE", 64 * 1024)
MAILHOST_SIEVE_MAX_SCRIPTS = env_int("MAILHOST_SIEVE_MAX_SCRIPTS", 20)
# Redirects one mailbox's scripts may send per hour; more are filed instead.
MAILHOST_SIEVE_REDIRECTS_PER_HOUR = env_int("MAILHOST_SIEVE_REDIRECTS_PER_HOUR", 100)
# A message that passed this many hops (Received fields) is not redirected again.
MAILHOST_SIEVE_MAX_HOPS = env_int("MAILHOST_SIEVE_MAX_HOPS", 25)
MAILHOST_MANAGESIEVE_MAX_LINE = env_int("MAILHOST_MANAGESIEVE_MAX_LINE", 8 * 1024)
MAILHOST_MANAGESIEVE_IDLE_TIMEOUT = env_int("MAILHOST_MANAGESIEVE_IDLE_TIMEOUT", 600)
MAILHOST_MANAGESIEVE_MAX_BAD_COMMANDS = env_int("MAILHOST_MANAGESIEVE_MAX_BAD_COMMANDS", 20)
