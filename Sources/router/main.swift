import RouterStage
import SwitchyardCore

PipelineLoop.runStage(.router) { Router(context: $0) }
