"""getTextBalance's answer: an amount as the sound files Asterisk's Playback() plays,
joined by `&` (`Playback(${CALLGATE_ANSWER})` plays them in turn).

The spec's example, for 0.00 EUR: `balance&null&euro&null&cents&tadam3s`. So the line is
`balance`, the whole units in words, the unit's name, the cents in words, the cents'
name and a closing `tadam3s`; a negative amount starts with `minus` after `balance`.

Words are callgate's own sound set (the spec's: `null` is zero), which the operator puts
in Asterisk's sounds directory: `null`, `1` … `19`, `20` `30` … `90`, `hundred`,
`thousand`, `million`, `billion`, `trillion`, `minus`, `balance`, `tadam3s`, and the unit
names of CURRENCY_UNITS (another currency: its code in lower case, and `cents`). English
order: 2,351.07 is `2&thousand&3&hundred&50&1` … `7`.

The amount is floored to the cent: the caller is never told of money it does not have.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from billing_core.money import CENT

OPENING = "balance"
CLOSING = "tadam3s"
MINUS = "minus"
ZERO_WORD = "null"
CURRENCY_UNITS: dict[str, tuple[str, str]] = {
    "EUR": ("euro", "cents"),
    "USD": ("dollars", "cents"),
    "GBP": ("pounds", "pence"),
    "RUB": ("rubles", "kopecks"),
}
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))


def units_of(currency: str) -> tuple[str, str]:
    return CURRENCY_UNITS.get(currency.upper(), (currency.lower(), "cents"))


def number_words(n: int) -> list[str]:
    """A whole number >= 0 as sound names: 0 -> null, 115 -> 1 hundred 15, 40 -> 40."""
    if n == 0:
        return [ZERO_WORD]
    words: list[str] = []
    for scale, name in SCALES:
        if n >= scale:
            words += [*number_words(n // scale), name]
            n %= scale
    if n >= 100:
        words += [str(n // 100), "hundred"]
        n %= 100
    if n >= 20:
        words.append(str(n - n % 10))
        n %= 10
    if n:
        words.append(str(n))
    return words


def sound_names(amount: Decimal, currency: str) -> str:
    """The `&`-joined Playback list for `amount` in `currency`."""
    cents_total = int(amount.quantize(CENT, rounding=ROUND_FLOOR) / CENT)
    sign = [MINUS] if cents_total < 0 else []
    whole, cents = divmod(abs(cents_total), 100)
    unit, sub_unit = units_of(currency)
    return "&".join([OPENING, *sign, *number_words(whole), unit, *number_words(cents), sub_unit, CLOSING])
