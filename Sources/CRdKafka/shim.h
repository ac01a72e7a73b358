#ifndef SWITCHYARD_CRDKAFKA_SHIM_H
#define SWITCHYARD_CRDKAFKA_SHIM_H

/* librdkafka >= 2.2 (see scripts/build-librdkafka.sh): found through pkg-config "rdkafka". */
#include <stdint.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* Macros Swift cannot import (casts, multi-line definitions, function-like): re-declared as constants. */
static const int32_t SY_RD_KAFKA_PARTITION_UA = RD_KAFKA_PARTITION_UA;
static const int64_t SY_RD_KAFKA_OFFSET_BEGINNING = RD_KAFKA_OFFSET_BEGINNING;
static const int SY_RD_KAFKA_MSG_F_COPY = RD_KAFKA_MSG_F_COPY;
static const int SY_RD_KAFKA_EVENT_DR = RD_KAFKA_EVENT_DR;
static const int SY_RD_KAFKA_EVENT_LOG = RD_KAFKA_EVENT_LOG;
static const int SY_RD_KAFKA_EVENT_ERROR = RD_KAFKA_EVENT_ERROR;

/* RD_KAFKA_OFFSET_TAIL(cnt): start cnt messages before the partition's end. */
static inline int64_t sy_rd_kafka_offset_tail(int64_t cnt) { return RD_KAFKA_OFFSET_TAIL(cnt); }

/* rd_kafka_producev is variadic, which Swift cannot call: a record with headers goes through this. Copies key and
 * value (RD_KAFKA_MSG_F_COPY); a NULL key is a null key. On success librdkafka owns `headers`; on an error they are
 * still the caller's to destroy. */
static inline rd_kafka_resp_err_t sy_rd_kafka_produce_with_headers(rd_kafka_t *rk, rd_kafka_topic_t *rkt,
        int32_t partition, void *value, size_t value_len, const void *key, size_t key_len,
        rd_kafka_headers_t *headers, void *opaque) {
    return rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(value, value_len),
                             RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}

#endif
