/* ThreadSanitizer annotations for hand-offs through uninstrumented code.
 *
 * The grpc core from Debian is not built with -fsanitize=thread, so TSan
 * cannot see that a tag handed to the core (grpc_call_start_batch,
 * grpc_server_request_call) on one thread comes out of
 * grpc_completion_queue_next on another thread after everything the first
 * thread wrote.  GT_TSAN_RELEASE(tag) before the hand-off and
 * GT_TSAN_ACQUIRE(tag) after the tag comes back state that edge.  Both
 * are no-ops unless the build is -fsanitize=thread. */
#ifndef GT_TSAN_H
#define GT_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define GT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GT_TSAN 1
#endif
#endif

#ifdef GT_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define GT_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#define GT_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#else
#define GT_TSAN_ACQUIRE(addr) ((void)(addr))
#define GT_TSAN_RELEASE(addr) ((void)(addr))
#endif

#endif
