"""Protocol constants, named and valued as in the WireGuard paper and wireguard-go."""

from typing import Final

REKEY_AFTER_MESSAGES: Final = 1 << 60
REJECT_AFTER_MESSAGES: Final = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME: Final = 120.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18 retries past the first
REKEY_TIMEOUT_JITTER_MAX_MS: Final = 334
REJECT_AFTER_TIME: Final = 180.0
KEEPALIVE_TIMEOUT: Final = 10.0
UNDER_LOAD_AFTER_TIME: Final = 1.0
PADDING_MULTIPLE: Final = 16
QUEUE_STAGED_SIZE: Final = 128
DEFAULT_MTU: Final = 1420
