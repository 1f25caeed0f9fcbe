"""Mailhost settings: everything comes from the environment, with defaults that
need no server (SQLite, a filesystem broker, a file cache, a self-signed
certificate), and everything an instance writes lives under MAILHOST_DATA_DIR.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import dj_database_url

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
    "apps.mailservers",
    "apps.delivery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
        "OPTIONS": {
            # DESIGN.md "Where the speed comes from": writers queue instead of
            # failing, and an acknowledged message survives power loss.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
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
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
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
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # The exchange tables; kombu's default is "control" in the working directory.
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("MAILHOST_CELERY_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "collect-unreferenced-blobs": {
        "task": "apps.store.tasks.collect_garbage",
        "schedule": 3600.0,
    },
    "run-outbound-queue": {
        "task": "apps.delivery.tasks.run_queue",
        "schedule": float(env_int("MAILHOST_QUEUE_INTERVAL", 5)),
    },
}

SESSION_ENGINE = "django.contrib.sessions.backends.db"

# --- i18n, static -------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- mail ---------------------------------------------------------------------
MAILHOST_HOSTNAME = env_str("MAILHOST_HOSTNAME", socket.getfqdn() or "localhost")
MAILHOST_STORAGE_ROOT = Path(
    env_str("MAILHOST_STORAGE_ROOT", str(DATA_DIR / "messages"))
).resolve()
MAILHOST_BIND = env_str("MAILHOST_BIND", "127.0.0.1")
MAILHOST_PORTS = {
    "smtp": env_port("SMTP_PORT", 2525),
    "submission": env_port("SUBMISSION_PORT", 2587),
    "smtps": env_port("SMTPS_PORT", 2465),
    "imap": env_port("IMAP_PORT", 1143),
    "imaps": env_port("IMAPS_PORT", 1993),
    "pop3": env_port("POP3_PORT", 1110),
    "pop3s": env_port("POP3S_PORT", 1995),
}
# Empty: a self-signed pair is generated into the data directory on first start.
MAILHOST_TLS_CERT = env_str("MAILHOST_TLS_CERT")
MAILHOST_TLS_KEY = env_str("MAILHOST_TLS_KEY")

MAILHOST_MAX_MESSAGE_SIZE = env_int("MAILHOST_MAX_MESSAGE_SIZE", 50 * 1024 * 1024)
MAILHOST_SMTP_MAX_RECIPIENTS = env_int("MAILHOST_SMTP_MAX_RECIPIENTS", 100)
MAILHOST_SMTP_TIMEOUT = env_int("MAILHOST_SMTP_TIMEOUT", 300)
MAILHOST_DEFAULT_QUOTA = env_int("MAILHOST_DEFAULT_QUOTA", 1024 * 1024 * 1024)
MAILHOST_SUBADDRESS_DELIMITER = env_str("MAILHOST_SUBADDRESS_DELIMITER", "+")
MAILHOST_ALIAS_MAX_DEPTH = env_int("MAILHOST_ALIAS_MAX_DEPTH", 10)
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

# Submission (587/465) and the outbound queue.
# RFC 8314 §3: AUTH needs TLS, except (if this is on) from a loopback address.
MAILHOST_SUBMISSION_LOOPBACK_PLAINTEXT_AUTH = env_bool(
    "MAILHOST_SUBMISSION_LOOPBACK_PLAINTEXT_AUTH", True)
MAILHOST_SUBMISSION_MAX_RECIPIENTS = env_int("MAILHOST_SUBMISSION_MAX_RECIPIENTS", 100)
MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE = env_int(
    "MAILHOST_SUBMISSION_MAX_MESSAGE_SIZE", 25 * 1024 * 1024)
MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR = env_int(
    "MAILHOST_SUBMISSION_MAX_MESSAGES_PER_HOUR", 500)
# Postfix-style transport map: "example.net=127.0.0.1:2626,*=smtp.relay.test:587".
MAILHOST_TRANSPORTS = env_str("MAILHOST_TRANSPORTS")
MAILHOST_DELIVERY_PORT = env_port("MAILHOST_DELIVERY_PORT", 25)
MAILHOST_DELIVERY_TIMEOUT = env_int("MAILHOST_DELIVERY_TIMEOUT", 60)
# Dotted path of a callable returning a dnspython-like async resolver (tests).
MAILHOST_DNS_RESOLVER = env_str("MAILHOST_DNS_RESOLVER")
# RFC 5321 §4.5.4.1: give up after 4-5 days; tell the sender about a delay first.
MAILHOST_QUEUE_LIFETIME = env_int("MAILHOST_QUEUE_LIFETIME", 5 * 24 * 3600)
MAILHOST_QUEUE_DELAY_NOTICE = env_int("MAILHOST_QUEUE_DELAY_NOTICE", 4 * 3600)
MAILHOST_QUEUE_RETRY_MIN = env_int("MAILHOST_QUEUE_RETRY_MIN", 300)
MAILHOST_QUEUE_RETRY_MAX = env_int("MAILHOST_QUEUE_RETRY_MAX", 4 * 3600)
# A claim not finished in this time (a dead worker) is taken again.
MAILHOST_QUEUE_CLAIM_SECONDS = env_int("MAILHOST_QUEUE_CLAIM_SECONDS", 900)
MAILHOST_QUEUE_BATCH = env_int("MAILHOST_QUEUE_BATCH", 200)
# Wake the queue runner when mail is queued, not only at its next beat. Off by
# default on the filesystem broker: a worker takes about one message per second
# from it, so one wake-up per queued message buries the delivery tasks.
MAILHOST_QUEUE_KICK = env_bool("MAILHOST_QUEUE_KICK", bool(REDIS_URL))

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
