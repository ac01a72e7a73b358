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

#endif
