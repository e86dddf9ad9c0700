#!/usr/bin/env bash
# Real audio/video environment for the app tests: a virtual microphone (PulseAudio null sink -> remapped source)
# and an X display (Xvfb). Used by .ci/run and by tests/conftest.py (which runs `up` itself when nothing is up).
#
#   bash .ci/av-env.sh install        # Debian packages (root)
#   eval "$(bash .ci/av-env.sh up)"   # starts both, prints `export PULSE_SERVER=... DISPLAY=...` lines
#   bash .ci/av-env.sh play FILE      # feed the virtual mic (blocks for the file's duration)
#   bash .ci/av-env.sh down           # stops what `up` started (pid files under $AV_DIR)
#
# Facts behind the details (measured, see the notes): an idle null sink renders in 2 s bursts, so a silent 10 ms
# `pacat` stream keeps it ticking; PortAudio enumerates devices when sounddevice is imported, so `up` must come first.
set -u
AV_DIR=${AV_DIR:-/tmp/avatar-av}
VMIC_RATE=${VMIC_RATE:-48000}          # a typical hardware rate, so the app's resampling to 16 kHz is exercised
XDISP=${XDISP:-:97}

AV_APT_PACKAGES=(
  # virtual microphone; sounddevice's Linux wheel does not bundle PortAudio
  pulseaudio pulseaudio-utils libasound2-plugins libportaudio2
  # X display and an external screenshot tool
  xvfb xauth x11-utils imagemagick
  # QtGui and the xcb platform plugin
  libegl1 libgl1 libglib2.0-0 libfontconfig1 libfreetype6 libdbus-1-3 fonts-dejavu-core
  libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
  libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1
  libxcb-sync1 libxcb-shm0
)

_pulse_env() {
  # a private daemon per AV_DIR: runtime and state paths inside it, nothing shared with a desktop session
  export PULSE_RUNTIME_PATH="$AV_DIR/pulse-run" PULSE_STATE_PATH="$AV_DIR/pulse-state"
  export PULSE_SERVER="unix:$AV_DIR/pulse.sock"
}

av_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends "${AV_APT_PACKAGES[@]}"
}

av_up_pulse() {
  _pulse_env
  mkdir -p "$PULSE_RUNTIME_PATH" "$PULSE_STATE_PATH"
  pulseaudio --daemonize=yes -n --exit-idle-time=-1 --disallow-exit=yes --use-pid-file=yes \
    --log-target=file:"$AV_DIR/pulse.log" \
    --load="module-native-protocol-unix socket=$AV_DIR/pulse.sock auth-anonymous=1" \
    --load="module-null-sink sink_name=vmic_out rate=$VMIC_RATE channels=1 sink_properties=device.description=VMicOut" \
    --load="module-remap-source source_name=vmic master=vmic_out.monitor channels=1 source_properties=device.description=VirtualMic" \
    >/dev/null 2>&1 || { tail -5 "$AV_DIR/pulse.log" >&2; return 1; }
  for _ in $(seq 100); do pactl info >/dev/null 2>&1 && break; sleep 0.05; done
  pactl set-default-source vmic && pactl set-default-sink vmic_out || return 1
  setsid pacat --playback -d vmic_out --latency-msec=10 --raw --rate="$VMIC_RATE" --channels=1 --format=s16le \
    --client-name=vmic-keepalive /dev/zero </dev/null >/dev/null 2>&1 &
  echo $! > "$AV_DIR/keepalive.pid"
  local l
  for _ in $(seq 60); do   # wait until the sink has left its initial 2 s block
    l=$(pactl list sinks | sed -n 's/^\s*Latency: \([0-9]*\) usec.*/\1/p' | head -1)
    [ -n "$l" ] && [ "$l" -lt 50000 ] && break; sleep 0.05
  done
  echo "export PULSE_SERVER=$PULSE_SERVER PULSE_RUNTIME_PATH=$PULSE_RUNTIME_PATH PULSE_STATE_PATH=$PULSE_STATE_PATH"
}

av_up_x() {
  setsid Xvfb "$XDISP" -screen 0 1280x1024x24 -nolisten tcp -noreset </dev/null >"$AV_DIR/xvfb.log" 2>&1 &
  echo $! > "$AV_DIR/xvfb.pid"
  for _ in $(seq 100); do DISPLAY="$XDISP" xdpyinfo >/dev/null 2>&1 && break; sleep 0.05; done
  DISPLAY="$XDISP" xdpyinfo >/dev/null 2>&1 || { echo "Xvfb failed" >&2; cat "$AV_DIR/xvfb.log" >&2; return 1; }
  echo "export DISPLAY=$XDISP"
}

av_up() {
  mkdir -p "$AV_DIR"
  case "${1:-all}" in
    pulse) av_up_pulse;; x) av_up_x;;
    all) av_up_pulse && av_up_x;;
  esac
}

av_down() {
  _pulse_env
  for p in keepalive xvfb; do
    [ -f "$AV_DIR/$p.pid" ] && kill "$(cat "$AV_DIR/$p.pid")" 2>/dev/null
  done
  pulseaudio --kill >/dev/null 2>&1 || true
  for _ in $(seq 40); do pactl info >/dev/null 2>&1 || break; sleep 0.05; done
  rm -rf "$AV_DIR"
}

av_play() { _pulse_env; paplay -d vmic_out "$1"; }

case "${1:-}" in
  install) av_install;;
  packages) echo "${AV_APT_PACKAGES[@]}";;
  up) av_up "${2:-all}";;
  down) av_down;;
  play) av_play "$2";;
  *) echo "usage: av-env.sh install|packages|up [pulse|x|all]|down|play FILE" >&2; exit 2;;
esac
