/*
 * A stand-in for Windows' bcryptprimitives.dll, for Wine versions older than 8.13 (Debian 12
 * ships 8.0). Rust's standard library (1.78 and later) gets its random numbers from
 * ProcessPrng in this DLL, and every Rust program exits at start-up (code 53, DLL not found)
 * where it is missing. ProcessPrng forwards to RtlGenRandom (SystemFunction036 in
 * advapi32.dll), which Wine has long provided and which reads the same system source.
 *
 * Built and put in the Wine prefix's system32 by .ci/windows; never shipped.
 */
#include <windows.h>

/* RtlGenRandom: advapi32's export, declared here because its header needs special macros. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills `data` with `len` random bytes. Windows documents that it always returns TRUE;
 * here a failure of the source is passed on, in pieces of at most what one ULONG counts. */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
