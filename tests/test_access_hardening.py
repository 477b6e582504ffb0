"""Access hardening: long passphrases.

Real services over temporary data dirs through the Flask test client.
"""
import bcrypt
from sqlalchemy import select

from app.auth import PREHASHED
from models import User
from tests.test_identity import assert_unauthorized, bearer, create_user, login, login_token, me
from tests.test_identity import admin, depot  # noqa: F401  (fixtures)


# --- 6. long passphrases ------------------------------------------------------------------------------------

PASSPHRASE = ("correct horse battery staple, ünïcödé too: " * 5)[:200]
OTHER_PASSPHRASE = PASSPHRASE[:150] + "x" * 50


def test_a_200_character_passphrase_through_create_login_and_change(depot, admin):
    assert len(PASSPHRASE) == 200 and len(PASSPHRASE.encode()) > 72
    create_user(depot, admin, "poet", ["read"], PASSPHRASE)
    token = login_token(depot, "poet", PASSPHRASE)
    # bytes beyond the 72nd count: a passphrase sharing only the first 150 characters is wrong
    assert_unauthorized(login(depot, "poet", OTHER_PASSPHRASE), "INVALID_CREDENTIALS")
    changed = depot.client.post("/auth/change-password", headers=bearer(token),
                                json={"current_password": PASSPHRASE, "new_password": OTHER_PASSPHRASE})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert_unauthorized(login(depot, "poet", PASSPHRASE), "INVALID_CREDENTIALS")
    assert login(depot, "poet", OTHER_PASSPHRASE).status_code == 200
    reset = depot.client.patch("/admin/users/poet", headers=admin, json={"password": PASSPHRASE})
    assert reset.status_code == 200
    assert login(depot, "poet", PASSPHRASE).status_code == 200
    with depot.service.sessions() as session:
        assert session.scalar(select(User.password_hash).where(User.username == "poet")).startswith(PREHASHED)


def test_a_plain_bcrypt_hash_from_before_prehashing_still_logs_in(depot, admin):
    create_user(depot, admin, "veteran", ["read"], "replaced-below-1")
    with depot.service.sessions() as session:
        user = session.scalar(select(User).where(User.username == "veteran"))
        user.password_hash = bcrypt.hashpw(b"veteran-password-1", bcrypt.gensalt(4)).decode()
        session.commit()
    assert me(depot, login_token(depot, "veteran", "veteran-password-1")).status_code == 200
    assert_unauthorized(login(depot, "veteran", "veteran-password-2"), "INVALID_CREDENTIALS")
    assert_unauthorized(login(depot, "veteran", PASSPHRASE), "INVALID_CREDENTIALS")  # long: no 500
