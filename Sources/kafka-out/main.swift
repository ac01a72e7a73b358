import KafkaOutStage
import SwitchyardCore

PipelineLoop.runStage(.kafkaOut) { try KafkaOut(context: $0) }
