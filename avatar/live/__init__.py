"""The live stage: audio sources -> mouth parameters on the audio clock -> frames (view, recording, file).

    sources.py    AudioSource (the protocol), SilenceSource, MicSource, FileSource: 16 kHz audio in real time, and
                  when each sample was captured (or heard)
    track.py      ParamTrack (100 Hz rows by audio time), ParamSmoother (the spring), ParamSampler (smoothed by time)
    pipeline.py   LipSync (audio -> rows on the track), LivePipeline (the audio and render threads, with on_frame /
                  on_audio observers for the view and benchmarks), Frame, AudioBlock, Stats
    recording.py  LiveRecording: the live streams into a recorder on one clock
    offline.py    render_offline: a speech file to an MP4 as fast as the machine allows

Renderer assembly (photo -> rig -> renderer, background fill) is avatar.face.assemble. Nothing here knows about Qt.
"""
