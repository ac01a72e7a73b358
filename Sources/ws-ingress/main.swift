import IngressStage

IngressServer.main()
