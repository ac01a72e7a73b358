#ifndef SWITCHYARD_CNANOMSG_SHIM_H
#define SWITCHYARD_CNANOMSG_SHIM_H

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>

/* nanomsg defines these as computed macros, which Swift cannot import: re-declare them as constants. */
static const int SY_AF_SP = AF_SP;
static const int SY_NN_PUSH = NN_PUSH;
static const int SY_NN_PULL = NN_PULL;
static const int SY_NN_SOL_SOCKET = NN_SOL_SOCKET;
static const int SY_NN_LINGER = NN_LINGER;
static const int SY_NN_SNDBUF = NN_SNDBUF;
static const int SY_NN_RCVBUF = NN_RCVBUF;
static const int SY_NN_SNDTIMEO = NN_SNDTIMEO;
static const int SY_NN_RCVTIMEO = NN_RCVTIMEO;
static const int SY_NN_RCVMAXSIZE = NN_RCVMAXSIZE;
static const int SY_NN_RECONNECT_IVL = NN_RECONNECT_IVL;
static const int SY_NN_RECONNECT_IVL_MAX = NN_RECONNECT_IVL_MAX;
static const int SY_NN_DONTWAIT = NN_DONTWAIT;
static const int SY_ETIMEDOUT = ETIMEDOUT;
static const int SY_EAGAIN = EAGAIN;
static const int SY_EINTR = EINTR;
static const int SY_EBADF = EBADF;
static const int SY_ETERM = ETERM;

/* Names the calling thread (JoinableThread; shown by top -H, gdb); Linux keeps the first 15 bytes. */
#ifdef __linux__
#include <sys/prctl.h>
static inline void sy_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }
#else
static inline void sy_set_thread_name(const char *name) { (void)name; }
#endif

#endif
