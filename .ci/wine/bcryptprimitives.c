/* A stand-in for Windows' bcryptprimitives.dll, for running Windows builds under wine in CI.
 * Rust >= 1.78 takes its random bytes (HashMap seeds, ...) from ProcessPrng in that DLL, which
 * Debian 12's wine 8.0 does not have: without it no Rust program starts there. This one asks
 * BCryptGenRandom, which wine has. Built with mingw by .ci/windows-smoke; a test fixture, never
 * shipped with upload. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
