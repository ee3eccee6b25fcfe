// Korean texts: the server's stable error codes as messages, role and state names, formats.

const ERRORS = {
  // access
  unauthorized: "로그인이 필요합니다.",
  invalid_credentials: "아이디 또는 비밀번호가 올바르지 않습니다.",
  account_disabled: "사용이 중지된 계정입니다. 관리자에게 문의하세요.",
  token_expired: "로그인이 만료되었습니다. 다시 로그인해 주세요.",
  token_revoked: "로그인이 해제되었습니다. 다시 로그인해 주세요.",
  invalid_token: "로그인 정보가 올바르지 않습니다. 다시 로그인해 주세요.",
  forbidden: "이 작업을 할 권한이 없습니다.",
  not_permitted: "이 작업을 할 권한이 없습니다.",
  acl_not_permitted: "본인이 속하지 않은 대상에게는 열람 권한을 줄 수 없습니다.",
  rate_limited: "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
  // input
  invalid_input: "입력값이 올바르지 않습니다.",
  invalid_request: "입력값이 올바르지 않습니다.",
  malformed_json: "요청 형식이 올바르지 않습니다.",
  empty_input: "질문을 입력해 주세요.",
  query_too_long: "질문이 너무 깁니다. 줄여서 다시 시도해 주세요.",
  question_too_long: "질문이 너무 깁니다. 줄여서 다시 시도해 주세요.",
  invalid_acl: "열람 권한 형식이 올바르지 않습니다 (예: public, user:kim, group:legal).",
  invalid_metadata: "메타데이터 형식이 올바르지 않습니다 (키=값).",
  unknown_filter_field: "알 수 없는 메타데이터 항목으로 거를 수 없습니다.",
  unsupported_filter: "지원하지 않는 필터입니다.",
  invalid_k: "검색 개수가 올바르지 않습니다.",
  payload_too_large: "보낸 내용이 너무 큽니다.",
  weak_password: "비밀번호가 너무 짧거나 약합니다.",
  invalid_role: "알 수 없는 역할입니다.",
  user_exists: "이미 있는 사용자입니다.",
  group_exists: "이미 있는 그룹입니다.",
  user_not_found: "사용자를 찾을 수 없습니다.",
  group_not_found: "그룹을 찾을 수 없습니다.",
  api_key_not_found: "API 키를 찾을 수 없습니다.",
  invalid_comment: "의견이 너무 깁니다.",
  invalid_rating: "평가 값이 올바르지 않습니다.",
  invalid_reason: "사유 값이 올바르지 않습니다.",
  invalid_days: "기간 값이 올바르지 않습니다.",
  feedback_not_an_answer: "답변에만 평가를 남길 수 있습니다.",
  invalid_title: "대화 이름이 비어 있거나 쓸 수 없는 문자가 있습니다.",
  invalid_tz: "시간대 값이 올바르지 않습니다.",
  invalid_callback_headers: "콜백 헤더가 올바르지 않습니다.",
  // images
  vision_unavailable: "이미지 질문에 답할 이미지 분석 모델이 설정되어 있지 않습니다. 이미지를 빼고 질문해 주세요.",
  image_invalid: "이미지 파일을 읽을 수 없습니다.",
  image_too_large: "이미지가 너무 큽니다.",
  image_unsupported_type: "지원하지 않는 이미지 형식입니다 (PNG, JPEG, WebP, GIF).",
  too_many_images: "이미지가 너무 많습니다.",
  // lookups
  not_found: "찾을 수 없습니다.",
  document_not_found: "문서를 찾을 수 없습니다 (없거나 열람 권한이 없습니다).",
  session_not_found: "대화를 찾을 수 없습니다.",
  job_not_found: "작업을 찾을 수 없습니다.",
  run_not_found: "평가 실행을 찾을 수 없습니다.",
  invalid_run_name: "평가 실행 이름이 올바르지 않습니다.",
  run_corrupt: "평가 실행 파일을 읽을 수 없습니다.",
  method_not_allowed: "이 서버가 지원하지 않는 기능입니다.",
  // files
  unsupported_format: "지원하지 않는 파일 형식입니다.",
  file_too_large: "파일이 너무 큽니다.",
  file_too_complex: "파일 구조가 너무 복잡해 처리할 수 없습니다.",
  too_many_chunks: "문서가 너무 커서 색인할 수 없습니다.",
  empty_file: "빈 파일입니다.",
  no_text: "파일에서 글자를 찾지 못했습니다.",
  encrypted_file: "암호가 걸린 파일은 올릴 수 없습니다.",
  corrupt_file: "손상된 파일입니다.",
  encoding_error: "파일의 문자 인코딩을 읽을 수 없습니다.",
  parse_error: "파일을 읽는 중 오류가 났습니다.",
  invalid_filename: "파일 이름이 올바르지 않습니다.",
  not_reindexable: "원본이 없어 다시 색인할 수 없습니다.",
  source_missing: "원본 파일이 없어 다시 색인할 수 없습니다.",
  // jobs
  job_finished: "이미 끝난 작업입니다.",
  not_pausable: "이 작업은 일시 중지할 수 없습니다.",
  queue_unavailable: "작업 대기열을 사용할 수 없습니다.",
  // server and models
  timeout: "응답 시간이 초과되었습니다. 다시 시도해 주세요.",
  storage_full: "서버 저장 공간이 가득 찼습니다. 관리자에게 알려 주세요.",
  internal_error: "서버 내부 오류가 발생했습니다. 잠시 후 다시 시도해 주세요.",
  unavailable: "서버를 지금 사용할 수 없습니다. 잠시 후 다시 시도해 주세요.",
  index_unavailable: "검색 색인을 사용할 수 없습니다.",
  backend_error: "내부 서비스 오류가 발생했습니다.",
  database_error: "데이터베이스 오류가 발생했습니다.",
  llm_unavailable: "언어 모델에 연결할 수 없습니다.",
  llm_timeout: "언어 모델의 응답이 너무 늦습니다.",
  llm_busy: "언어 모델이 바쁩니다. 잠시 후 다시 시도해 주세요.",
  llm_stream_cut: "언어 모델의 응답이 중간에 끊겼습니다.",
  llm_error: "언어 모델 오류가 발생했습니다.",
  llm_http_error: "언어 모델 오류가 발생했습니다.",
  llm_bad_response: "언어 모델이 잘못된 응답을 보냈습니다.",
  embedding_backend_unavailable: "임베딩 모델을 사용할 수 없습니다.",
  table_route_unavailable: "표 질의를 처리할 수 없습니다.",
  table_route_failed: "표 질의를 처리하지 못했습니다.",
  sql_timeout: "표 질의 시간이 초과되었습니다.",
  network: "서버에 연결할 수 없습니다. 네트워크를 확인해 주세요.",
  stream_cut: "연결이 중간에 끊겼습니다. 받은 내용까지 표시합니다.",
  route_missing: "이 서버 버전에는 아직 없는 기능입니다.",
};

const BY_STATUS = {
  400: "요청이 올바르지 않습니다.",
  401: ERRORS.unauthorized,
  403: ERRORS.forbidden,
  404: ERRORS.not_found,
  409: "이미 처리되었거나 충돌이 있습니다.",
  413: ERRORS.payload_too_large,
  422: ERRORS.invalid_request,
  429: ERRORS.rate_limited,
  500: ERRORS.internal_error,
  502: ERRORS.unavailable,
  503: ERRORS.unavailable,
  504: ERRORS.timeout,
  507: ERRORS.storage_full,
};

/** A Korean message for a server error code (and HTTP status when the code is unknown). */
export function errorMessage(code, status) {
  if (code && ERRORS[code]) return ERRORS[code];
  if (code && code.startsWith("sql_")) return "표 질의를 처리하지 못했습니다.";
  if (code && code.startsWith("image_")) return "이미지를 처리하지 못했습니다.";
  if (status && BY_STATUS[status]) return BY_STATUS[status];
  if (status >= 500) return ERRORS.internal_error;
  return "요청을 처리하지 못했습니다.";
}

export const ROLES = { viewer: "열람자", editor: "편집자", admin: "관리자" };
export const DOC_STATUS = { indexed: "색인됨", indexing: "색인 중", failed: "실패" };
export const JOB_STATES = {
  queued: "대기 중",
  running: "진행 중",
  paused: "일시 중지",
  succeeded: "완료",
  failed: "실패",
  cancelled: "취소됨",
};
export const FEEDBACK_REASONS = [
  ["wrong_source", "출처가 틀림"],
  ["outdated", "오래된 정보"],
  ["incomplete", "불완전"],
  ["other", "기타"],
];

/** "2025-01-02T03:04:05+00:00" → "2025. 1. 2. 오후 12:04" (local time); "" for nothing. */
export function formatDateTime(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString("ko-KR", { dateStyle: "medium", timeStyle: "short" });
}

export function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleDateString("ko-KR", { dateStyle: "medium" });
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("ko-KR", { maximumFractionDigits: 1 });
}
